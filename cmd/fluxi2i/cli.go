package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/simulator"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2 // bad flags or input: nothing was sent
	exitAPI      = 3 // the API answered an error
	exitInterupt = 4 // timeout or interrupt
)

const usage = `fluxi2i: FLUX.1 [dev] image-to-image through fal's queue

Usage:
  fluxi2i run      --image PATH|URL --prompt TEXT [input flags] [--out DIR]
  fluxi2i submit   --image PATH|URL --prompt TEXT [input flags]
  fluxi2i status   REQUEST_ID [--logs]
  fluxi2i result   REQUEST_ID [--out DIR]
  fluxi2i wait     REQUEST_ID [--out DIR]
  fluxi2i cancel   REQUEST_ID
  fluxi2i simulate [--addr HOST:PORT] [--api-key KEY]

Every subcommand takes --help. Configuration: --base-url, --api-key (or
FLUXI2I_API_KEY, or FAL_KEY for fal directly), --timeout, --json.
With no key and no base URL, run uses the built-in local simulator, which
is NOT the real model.

Exit codes: 0 success, 1 other failure, 2 bad input, 3 API error,
4 timeout or interrupt.
`

// Main runs the CLI with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	a := &app{ctx: ctx, env: env, stdout: stdout, stderr: stderr}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return a.run(rest)
	case "submit":
		return a.submit(rest)
	case "status":
		return a.status(rest)
	case "result":
		return a.resultOrWait("result", rest)
	case "wait":
		return a.resultOrWait("wait", rest)
	case "cancel":
		return a.cancel(rest)
	case "simulate":
		return a.simulate(rest)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "fluxi2i: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

type app struct {
	ctx            context.Context
	env            map[string]string
	stdout, stderr io.Writer

	baseURL, apiKey string
	timeout         time.Duration
	asJSON          bool
}

// flags returns a flag set with the configuration flags every subcommand
// that calls the API shares.
func (a *app) flags(name, synopsis string) *flag.FlagSet {
	fs := a.bareFlags(name, synopsis)
	fs.StringVar(&a.baseURL, "base-url", "", "API base URL (default $FLUXI2I_BASE_URL, or "+wrapper.AggregatorURL+"; "+wrapper.FalURL+" with FAL_KEY)")
	fs.StringVar(&a.apiKey, "api-key", "", "API key (default $FLUXI2I_API_KEY or $FAL_KEY); never printed")
	fs.DurationVar(&a.timeout, "timeout", 0, "give up (and cancel the job) after this long, e.g. 5m (default: no limit)")
	fs.BoolVar(&a.asJSON, "json", false, "print machine-readable JSON on stdout")
	return fs
}

// bareFlags is a flag set with no shared flags, printing its usage on
// stderr.
func (a *app) bareFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("fluxi2i "+name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: fluxi2i %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, flags and positional arguments in any order, and
// returns the positional ones; done is set (with the exit code) for --help
// and errors.
func parse(fs *flag.FlagSet, args []string) (positional []string, code int, done bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, true
			}
			return nil, exitUsage, true
		}
		if fs.NArg() == 0 {
			return positional, 0, false
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// client builds the API client the way wrapper.New resolves it: flags
// first, then FLUXI2I_API_KEY, FLUXI2I_BASE_URL and FAL_KEY. With no key
// and no base URL it returns nil: the caller decides whether the simulator
// may stand in. A loopback base URL without a key gets a placeholder key (a
// local simulator accepts any).
func (a *app) client() (*wrapper.Client, error) {
	opts := []wrapper.Option{
		wrapper.WithEnvironment(func(k string) string { return a.env[k] }),
		wrapper.WithUserAgent("fluxi2i-cli"),
		wrapper.WithHTTPClient(httpClient),
	}
	if a.baseURL != "" {
		opts = append(opts, wrapper.WithBaseURL(a.baseURL))
	}
	if a.apiKey != "" {
		opts = append(opts, wrapper.WithAPIKey(a.apiKey))
	}
	c, err := wrapper.New(opts...)
	if errors.Is(err, wrapper.ErrNoCredentials) {
		base := a.baseURL
		if base == "" {
			base = strings.TrimSpace(a.env[wrapper.EnvBaseURL])
		}
		if base == "" {
			return nil, nil
		}
		if u, perr := url.Parse(base); perr != nil || !isLoopback(u.Hostname()) {
			return nil, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--api-key", Message: "required for " + hostOf(base) + " (or set " + wrapper.EnvAPIKey + " or " + wrapper.EnvFalKey + ")"}}}
		}
		c, err = wrapper.New(append(opts, wrapper.WithAPIKey("local"))...)
	}
	if err != nil {
		return nil, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--base-url", Message: err.Error()}}}
	}
	return c, nil
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Seams for the tests: the embedded simulator's options (shorter times)
// and the HTTP client (one that reaches an in-memory queuetest, so that
// time-based tests run under testing/synctest).
var (
	simOptions = func() []queuetest.Option { return simulator.Options(simulator.Config{}) }
	httpClient = http.DefaultClient
)

// localSimulator starts the in-process simulator and a client for it.
func (a *app) localSimulator() (*wrapper.Client, func(), error) {
	srv := queuetest.NewServer(simOptions()...)
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("local-simulator"), wrapper.WithHTTPClient(srv.Client()), wrapper.WithUserAgent("fluxi2i-cli"))
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	fmt.Fprintln(a.stderr, "fluxi2i: no API key and no --base-url: using the built-in local simulator.")
	fmt.Fprintln(a.stderr, "fluxi2i: this is NOT the real model: it transforms your image deterministically. Set FLUXI2I_API_KEY (or FAL_KEY) to call FLUX.1 [dev].")
	return c, srv.Close, nil
}

func (a *app) context() (context.Context, context.CancelFunc) {
	if a.timeout > 0 {
		return context.WithTimeout(a.ctx, a.timeout)
	}
	return context.WithCancel(a.ctx)
}

// inputFlags are the model's input as flags; only flags given are sent.
type inputFlags struct {
	image, prompt, format, accel string
	strength, guidance           float64
	steps, numImages             int
	seed                         int64
	sync, noSafety               bool
	webhook                      string
}

func (f *inputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.image, "image", "", "input image: a local file (jpeg, png, webp, gif, avif) or an http(s) URL (required)")
	fs.StringVar(&f.prompt, "prompt", "", "what to make of the image (required)")
	fs.Float64Var(&f.strength, "strength", 0.95, "how much the image is transformed, 0.01 to 1")
	fs.IntVar(&f.steps, "steps", 40, "inference steps, 10 to 50")
	fs.Float64Var(&f.guidance, "guidance", 3.5, "guidance scale, 1 to 20")
	fs.Int64Var(&f.seed, "seed", 0, "seed for a reproducible result (default: random)")
	fs.IntVar(&f.numImages, "num-images", 1, "images to generate, 1 to 4")
	fs.StringVar(&f.format, "format", "jpeg", "output format: jpeg or png")
	fs.StringVar(&f.accel, "acceleration", "", "none, regular or high (default: the server's)")
	fs.BoolVar(&f.sync, "sync", false, "sync_mode: images come back inline and are not kept in history")
	fs.BoolVar(&f.noSafety, "no-safety-checker", false, "disable the safety checker")
}

// build turns the flags given into an input and call options. Nothing is
// sent: errors name the flag.
func (f *inputFlags) build(fs *flag.FlagSet) (gen.Input, []wrapper.Option, error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	in := gen.Input{Prompt: f.prompt}
	var opts []wrapper.Option
	var bad []wrapper.FieldError
	switch {
	case f.image == "":
		bad = append(bad, wrapper.FieldError{Field: "--image", Message: "is required: a local image file or an http(s) URL"})
	case strings.HasPrefix(f.image, "http://") || strings.HasPrefix(f.image, "https://") || strings.HasPrefix(f.image, "data:"):
		in.ImageURL = f.image
	default:
		im, err := wrapper.ImageFile(f.image)
		if err != nil {
			bad = append(bad, wrapper.FieldError{Field: "--image", Message: err.Error()})
		} else {
			opts = append(opts, wrapper.WithImage(im))
		}
	}
	if set["strength"] {
		in.Strength = &f.strength
	}
	if set["steps"] {
		in.NumInferenceSteps = &f.steps
	}
	if set["guidance"] {
		in.GuidanceScale = &f.guidance
	}
	if set["seed"] {
		in.Seed = &f.seed
	}
	if set["num-images"] {
		in.NumImages = &f.numImages
	}
	if set["format"] {
		v := gen.InputOutputFormat(f.format)
		in.OutputFormat = &v
	}
	if set["acceleration"] {
		v := gen.InputAcceleration(f.accel)
		in.Acceleration = &v
	}
	if set["sync"] {
		in.SyncMode = &f.sync
	}
	if f.noSafety {
		off := false
		in.EnableSafetyChecker = &off
	}
	if f.webhook != "" {
		opts = append(opts, wrapper.WithWebhook(f.webhook))
	}
	probe := in
	if probe.ImageURL == "" {
		probe.ImageURL = "https://placeholder.invalid/x.png" // the file was checked above
	}
	var ie *wrapper.InputError
	if err := wrapper.Validate(probe); errors.As(err, &ie) {
		for _, fe := range ie.Fields {
			fe.Field = "--" + flagName(fe.Field)
			bad = append(bad, fe)
		}
	}
	if len(bad) > 0 {
		return in, nil, &wrapper.InputError{Fields: bad}
	}
	return in, opts, nil
}

// flagName maps an input field to its flag.
func flagName(field string) string {
	switch field {
	case "num_inference_steps":
		return "steps"
	case "guidance_scale":
		return "guidance"
	case "num_images":
		return "num-images"
	case "output_format":
		return "format"
	case "image_url":
		return "image"
	}
	return field
}

// fail reports err on stderr and returns its exit code.
func (a *app) fail(err error) int {
	code := exitFailure
	var ie *wrapper.InputError
	var apiErr *wrapper.APIError
	var je *wrapper.JobError
	switch {
	case errors.As(err, &ie):
		code = exitUsage
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = exitInterupt
	case errors.As(err, &apiErr):
		code = exitAPI
	}
	msg := err.Error()
	if errors.As(err, &je) && code == exitInterupt {
		what := "interrupted"
		if errors.Is(err, context.DeadlineExceeded) {
			what = "timed out"
		}
		if je.Cancelled {
			msg = fmt.Sprintf("%s: request %s was cancelled on the server", what, je.RequestID)
		} else {
			msg = fmt.Sprintf("%s: request %s may still be running; resume with: fluxi2i wait %s", what, je.RequestID, je.RequestID)
		}
	}
	fmt.Fprintln(a.stderr, "fluxi2i:", msg)
	if a.asJSON {
		a.printJSON(map[string]any{"error": msg, "exit_code": code})
	}
	return code
}

func (a *app) printJSON(v any) {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// oneID returns the single positional request id.
func (a *app) oneID(fs *flag.FlagSet, positional []string) (string, bool) {
	if len(positional) != 1 || positional[0] == "" {
		fmt.Fprintln(a.stderr, "fluxi2i: expected one REQUEST_ID")
		fs.Usage()
		return "", false
	}
	return positional[0], true
}

// apiClient is client() for the subcommands that need a real endpoint.
func (a *app) apiClient() (*wrapper.Client, int) {
	c, err := a.client()
	if err != nil {
		return nil, a.fail(err)
	}
	if c == nil {
		return nil, a.fail(&wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--api-key", Message: "needed (or --base-url of a local `fluxi2i simulate`): the built-in simulator lives only as long as one `run`"}}})
	}
	return c, exitOK
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
