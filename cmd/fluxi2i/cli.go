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
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/simulator"
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
  fluxi2i batch    --images DIR --prompt TEXT --out OUT [input flags] [--concurrency N]
  fluxi2i batch    --manifest FILE.jsonl --out OUT [--concurrency N] [--at-most-once] [--redo-changed]
  fluxi2i simulate [--addr HOST:PORT] [--api-key KEY] [--fetch-images] [--max-memory MIB] [--public-url URL] [--webhooks]
  fluxi2i proxy    [--addr HOST:PORT] [--base-url URL] [--api-key KEY] [--allow-anyone] [--cors ORIGIN]
  fluxi2i version
  fluxi2i help     [COMMAND]

Every subcommand takes --help. Configuration: --base-url, --api-key (or
FLUXI2I_API_KEY, or FAL_KEY for fal directly), --timeout, --json.
--image - reads the image from standard input. Images are JPEG unless
--format png. With no key and no base URL, run uses the built-in local
simulator, which is NOT the real model.

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
	if cmd == "help" {
		if code := a.helpCommand(rest); code >= 0 {
			return code
		}
		cmd, rest = rest[0], []string{"--help"} // help COMMAND: the command's own help, on stdout
	}
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
	case "proxy":
		return a.proxy(rest)
	case "batch":
		return a.batch(rest)
	case "version", "--version":
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	case "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if s := closest(cmd, helpTopics); s != "" {
		fmt.Fprintf(stderr, "fluxi2i: unknown command %s; did you mean %s?\n\n%s", printable(cmd), s, usage)
	} else {
		fmt.Fprintf(stderr, "fluxi2i: unknown command %s\n\n%s", printable(cmd), usage)
	}
	return exitUsage
}

// commands are the subcommands, for help and suggestions.
var commands = map[string]bool{"run": true, "submit": true, "status": true, "result": true, "wait": true, "cancel": true, "simulate": true, "proxy": true, "batch": true, "version": true}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// versionLine names the CLI's version: the module's, when built from a
// tagged module, and the library's.
func versionLine() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return fmt.Sprintf("fluxi2i %s (library %s, %s)", v, wrapper.Version, runtime.Version())
}

// printable makes a string from the wire safe for a terminal: control
// characters (escape sequences among them) are shown escaped, not obeyed.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unsafeRune(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError || r == 0x2028 || r == 0x2029 || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

type app struct {
	ctx            context.Context
	env            map[string]string
	stdout, stderr io.Writer

	baseURL, apiKey string
	timeout         time.Duration
	asJSON          bool
	startTimeout    durationFlag // --start-timeout (run, submit, batch)
}

// durationFlag is a duration flag that knows whether it was given.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration such as 5m or 90s")
	}
	f.d, f.set = d, true
	return nil
}

// startTimeoutFlag registers --start-timeout, for the commands that
// submit (run, submit, batch).
func (a *app) startTimeoutFlag(fs *flag.FlagSet) {
	fs.Var(&a.startTimeout, "start-timeout", "how long a job may wait in the queue to start, a `DURATION` of more than 1s such as 5m "+
		"(sent as X-Fal-Request-Timeout; past it the server ends the job unstarted with a 504, never retried). "+
		"It also bounds how long a submit whose answer was lost is looked for in fal's request history: "+
		"this plus 2 minutes (without it, 10 minutes)")
}

// clientOptions are the options the flags add to every client made.
func (a *app) clientOptions() []wrapper.Option {
	if a.startTimeout.set {
		return []wrapper.Option{wrapper.WithStartTimeout(a.startTimeout.d)}
	}
	return nil
}

// flags returns a flag set with the configuration flags every subcommand
// that calls the API shares.
func (a *app) flags(name, synopsis string) *flag.FlagSet {
	fs := a.endpointFlags(name, synopsis)
	fs.DurationVar(&a.timeout, "timeout", 0, "give up (and cancel the job) after this long, e.g. 5m (default: no limit; each request still gives up after 30 s without progress)")
	fs.BoolVar(&a.asJSON, "json", false, "print machine-readable JSON on stdout")
	return fs
}

// endpointFlags is a flag set with the endpoint flags only (--base-url,
// --api-key), for a command that serves rather than waits (proxy).
func (a *app) endpointFlags(name, synopsis string) *flag.FlagSet {
	fs := a.bareFlags(name, synopsis)
	fs.StringVar(&a.baseURL, "base-url", "", "API base URL (default $FLUXI2I_BASE_URL, or "+wrapper.AggregatorURL+"; "+wrapper.FalURL+" with FAL_KEY)")
	fs.StringVar(&a.apiKey, "api-key", "", "API key (default $FLUXI2I_API_KEY or $FAL_KEY); never printed")
	return fs
}

// bareFlags is a flag set with no shared flags. Its Usage is the
// command's full help, on stdout (--help, help COMMAND); parse errors are
// reported by parse, in a line or two on stderr.
func (a *app) bareFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("fluxi2i "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() { printHelp(a.stdout, fs, name, synopsis) }
	return fs
}

// parse parses args, flags and positional arguments in any order, and
// returns the positional ones; done is set (with the exit code) for --help
// (the help on stdout) and errors (reported on stderr).
func (a *app) parse(fs *flag.FlagSet, args []string) (positional []string, code int, done bool) {
	help := fs.Usage
	fs.Usage = func() {} // the flag package calls it on errors too
	defer func() { fs.Usage = help }()
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				help()
				return nil, exitOK, true
			}
			a.flagError(fs, err)
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
	opts = append(opts, a.clientOptions()...)
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
		if field, perr := a.refused(); perr != nil {
			return nil, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: field, Message: perr.Error()}}}
		}
		return nil, err
	}
	return c, nil
}

// refused finds which value New refused among those the client is built
// from, each tried alone the way New reads it: the flags given, else the
// environment variables (FLUXI2I_API_KEY as WithAPIKey, FAL_KEY as
// WithFalKey when it is the key New reads, FLUXI2I_BASE_URL as
// WithBaseURL). It returns the flag or variable and New's error for its
// value alone; a nil error when no one value is refused alone.
func (a *app) refused() (string, error) {
	env := func(k string) string { return strings.TrimSpace(a.env[k]) }
	probe := wrapper.WithBearerToken("probe") // a base URL is tried with a credential
	type source struct {
		name string
		opts []wrapper.Option
	}
	var sources []source
	switch {
	case a.apiKey != "":
		sources = append(sources, source{"--api-key", []wrapper.Option{wrapper.WithAPIKey(a.apiKey)}})
	case env(wrapper.EnvAPIKey) != "":
		sources = append(sources, source{wrapper.EnvAPIKey, []wrapper.Option{wrapper.WithAPIKey(env(wrapper.EnvAPIKey))}})
	case env(wrapper.EnvFalKey) != "":
		sources = append(sources, source{wrapper.EnvFalKey, []wrapper.Option{wrapper.WithFalKey(env(wrapper.EnvFalKey))}})
	}
	switch {
	case a.baseURL != "":
		sources = append(sources, source{"--base-url", []wrapper.Option{wrapper.WithBaseURL(a.baseURL), probe}})
	case env(wrapper.EnvBaseURL) != "":
		sources = append(sources, source{wrapper.EnvBaseURL, []wrapper.Option{wrapper.WithBaseURL(env(wrapper.EnvBaseURL)), probe}})
	}
	for _, src := range sources {
		_, err := wrapper.New(append([]wrapper.Option{wrapper.WithEnvironment(nil), wrapper.WithHTTPClient(httpClient)}, src.opts...)...)
		if err != nil && !errors.Is(err, wrapper.ErrNoCredentials) {
			return src.name, err
		}
	}
	return "", nil
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
	simOptions           = func() []queuetest.Option { return simulator.Options(simulator.Config{}) }
	httpClient           = &http.Client{Transport: keepAliveTransport()}
	stdin      io.Reader = os.Stdin
)

// keepAliveTransport is http.DefaultTransport keeping up to 64 idle
// connections per host (the default keeps 2): batch and proxy hold many
// requests to one host at once, and a new connection for each costs more
// than the request.
func keepAliveTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return tr
}

// clientOrSimulator is client(), or, with no key and no base URL, the
// built-in simulator (simulated set); stop ends what it started.
func (a *app) clientOrSimulator() (c *wrapper.Client, stop func(), simulated bool, err error) {
	c, sim, stop, err := a.clientOrSimulatorAt("")
	return c, stop, sim != nil, err
}

// clientOrSimulatorAt is clientOrSimulator whose simulator (sim, nil for
// a real client) hands out job, file and upload URLs on public, when
// given (the proxy's origin, which then serves them).
func (a *app) clientOrSimulatorAt(public string) (c *wrapper.Client, sim *queuetest.Server, stop func(), err error) {
	if c, err = a.client(); err != nil || c != nil {
		return c, nil, func() {}, err
	}
	var opts []queuetest.Option
	if public != "" {
		opts = append(opts, queuetest.PublicURL(public))
	}
	return a.localSimulator(opts...)
}

// localSimulator starts the in-process simulator and a client for it.
func (a *app) localSimulator(opts ...queuetest.Option) (*wrapper.Client, *queuetest.Server, func(), error) {
	// Its one client is this process (and, behind `fluxi2i proxy`, the
	// proxy's users, whom the proxy bounds): a client's share is the whole.
	srv := queuetest.NewServer(append(append(simOptions(), queuetest.MaxJobsPerClient(simulator.MaxJobs), queuetest.MaxBytesPerClient(simulator.DefaultMaxBytes)), opts...)...)
	c, err := wrapper.New(append([]wrapper.Option{wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("local-simulator"), wrapper.WithHTTPClient(srv.Client()), wrapper.WithUserAgent("fluxi2i-cli")}, a.clientOptions()...)...)
	if err != nil {
		srv.Close()
		return nil, nil, nil, err
	}
	fmt.Fprintln(a.stderr, "fluxi2i: no API key and no --base-url: using the built-in local simulator.")
	fmt.Fprintln(a.stderr, "fluxi2i: this is NOT the real model: it transforms your image deterministically. Set FLUXI2I_API_KEY (or FAL_KEY) to call FLUX.1 [dev].")
	return c, srv, srv.Close, nil
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

// Defaults of the model's input as the spec gives them (gen generates the
// ranges, not the defaults; TestFlagDefaultsAreTheSpecs checks these
// against openapi/openapi.yaml). A flag not given is not sent: the server
// applies its own default.
const (
	defaultStrength  = 0.95
	defaultSteps     = 40
	defaultGuidance  = 3.5
	defaultNumImages = 1
)

// register adds the input flags; one job's commands (run, submit) take
// --image and need it and --prompt, batch takes its images elsewhere.
func (f *inputFlags) register(fs *flag.FlagSet, oneJob bool) {
	if oneJob {
		fs.StringVar(&f.image, "image", "", "input image: a local file (jpeg, png, webp, gif, avif), - for standard input, or an http(s) URL (required)")
		fs.StringVar(&f.prompt, "prompt", "", "what to make of the image (required)")
	} else {
		fs.StringVar(&f.prompt, "prompt", "", "what to make of each image (required with --images; with --manifest each line has its own)")
	}
	sent := "; sent only when given, else the server's default, %v"
	fs.Float64Var(&f.strength, "strength", defaultStrength, fmt.Sprintf("how much the image is transformed, %v (barely) to %v (entirely)"+sent, gen.InputStrengthMinimum, gen.InputStrengthMaximum, defaultStrength))
	fs.IntVar(&f.steps, "steps", defaultSteps, fmt.Sprintf("inference steps, %d to %d"+sent, gen.InputNumInferenceStepsMinimum, gen.InputNumInferenceStepsMaximum, defaultSteps))
	fs.Float64Var(&f.guidance, "guidance", defaultGuidance, fmt.Sprintf("guidance scale: how closely to follow the prompt, %v to %v"+sent, gen.InputGuidanceScaleMinimum, gen.InputGuidanceScaleMaximum, defaultGuidance))
	fs.Int64Var(&f.seed, "seed", 0, "seed for a reproducible result (default: random; the result reports the seed used)")
	fs.IntVar(&f.numImages, "num-images", defaultNumImages, fmt.Sprintf("images to generate, %d to %d"+sent, gen.InputNumImagesMinimum, gen.InputNumImagesMaximum, defaultNumImages))
	fs.StringVar(&f.format, "format", string(gen.InputOutputFormatJpeg), fmt.Sprintf("output format: %s (the default) or %s", gen.InputOutputFormatJpeg, gen.InputOutputFormatPng))
	fs.StringVar(&f.accel, "acceleration", "", fmt.Sprintf("generation speed: %s, %s or %s (default: the server's)", gen.InputAccelerationNone, gen.InputAccelerationRegular, gen.InputAccelerationHigh))
	fs.BoolVar(&f.sync, "sync", false, "sync_mode: images come back inline as data URIs and are not kept in history")
	fs.BoolVar(&f.noSafety, "no-safety-checker", false, "disable the safety checker")
}

// build turns the flags given into an input and call options. Nothing is
// sent: errors name the flag.
func (f *inputFlags) build(fs *flag.FlagSet) (gen.Input, []wrapper.Option, error) {
	set := given(fs)
	in := gen.Input{Prompt: f.prompt}
	var opts []wrapper.Option
	var bad []wrapper.FieldError
	switch {
	case f.image == "":
		bad = append(bad, wrapper.FieldError{Field: "--image", Message: "is required: a local image file or an http(s) URL"})
	case strings.HasPrefix(f.image, "http://") || strings.HasPrefix(f.image, "https://") || strings.HasPrefix(f.image, "data:"):
		in.ImageURL = f.image
	case f.image == "-":
		im, err := wrapper.ImageReader(stdin, 64<<20)
		if err != nil {
			bad = append(bad, wrapper.FieldError{Field: "--image", Message: "standard input: " + errprefix.Strip(err.Error())})
		} else {
			opts = append(opts, wrapper.WithImage(im))
		}
	default:
		im, err := wrapper.ImageFile(f.image)
		if err != nil {
			bad = append(bad, wrapper.FieldError{Field: "--image", Message: err.Error()})
		} else {
			opts = append(opts, wrapper.WithImage(im))
		}
	}
	f.apply(set, &in)
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

// apply sets the optional input fields whose flags were given.
func (f *inputFlags) apply(set map[string]bool, in *gen.Input) {
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
}

// given is the set of flags given on the command line.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return set
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

// checkConfig checks the shared flags once parsed.
func (a *app) checkConfig() error {
	if a.timeout < 0 {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--timeout", Message: fmt.Sprintf("%v is negative: give a duration such as 5m, or leave it out for no limit", a.timeout)}}}
	}
	if a.startTimeout.set && a.startTimeout.d <= time.Second {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--start-timeout", Message: fmt.Sprintf("%v: must be more than 1s (fal's minimum), such as 5m; or leave it out", a.startTimeout.d)}}}
	}
	return nil
}

// checkOut makes sure dir is, or can be made, a writable directory, before
// anything is sent or paid for.
func checkOut(dir string) error {
	bad := func(msg string) error {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--out", Message: msg}}}
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return bad(fmt.Sprintf("%s is a file, not a directory", dir))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bad(fmt.Sprintf("cannot create %s: %v", dir, errors.Unwrap(err)))
	}
	f, err := os.CreateTemp(dir, ".fluxi2i-check-*")
	if err != nil {
		return bad(fmt.Sprintf("cannot write into %s: %v", dir, errors.Unwrap(err)))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
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
	lines := errorLines(err)
	if errors.As(err, &je) && code == exitInterupt {
		what := "interrupted"
		if errors.Is(err, context.DeadlineExceeded) {
			what = "timed out"
		}
		if je.Cancelled {
			lines = []string{fmt.Sprintf("%s: request %s was cancelled on the server", what, je.RequestID)}
		} else {
			lines = []string{fmt.Sprintf("%s: request %s may still be running; resume with: fluxi2i wait %s", what, je.RequestID, je.RequestID)}
		}
	}
	// One line per error (errors.Join), each with the one prefix; nothing
	// from the wire reaches the terminal unescaped (a newline inside one
	// error's message among it).
	for i, l := range lines {
		lines[i] = errorText(l)
		fmt.Fprintln(a.stderr, "fluxi2i:", lines[i])
	}
	msg := strings.Join(lines, "\n")
	if a.asJSON {
		a.printJSON(map[string]any{"error": msg, "exit_code": code})
	}
	return code
}

// errorText is an error's message where the CLI names itself in front
// of it ("fluxi2i: " on stderr) or needs no name (an "error" in JSON): the
// library's errors start with that one prefix, which is left out, and
// other errors read as they are; nothing from the wire stays unescaped
// (printable).
func errorText(msg string) string { return printable(errprefix.Strip(msg)) }

// errorLines are err's messages, one for each error errors.Join joined
// (at any depth), in order; any other error is one message, whatever it
// holds.
func errorLines(err error) []string {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []string{err.Error()}
	}
	var lines, parts []string
	for _, e := range j.Unwrap() {
		if e != nil {
			lines = append(lines, errorLines(e)...)
			parts = append(parts, e.Error())
		}
	}
	if len(parts) == 0 || strings.Join(parts, "\n") != err.Error() {
		return []string{err.Error()} // not a join: fmt.Errorf with several %w, say
	}
	return lines
}

func (a *app) printJSON(v any) {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// oneID returns the single positional request id.
func (a *app) oneID(fs *flag.FlagSet, positional []string) (string, bool) {
	if len(positional) != 1 || positional[0] == "" {
		name := strings.TrimPrefix(fs.Name(), "fluxi2i ")
		fmt.Fprintf(a.stderr, "fluxi2i %s: expected one REQUEST_ID\nRun 'fluxi2i help %s' for its flags.\n", name, name)
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
