package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/serve"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/simulator"
	"github.com/fluxi2i/fluxi2i/wrapper/webhooktest"
)

func (a *app) run(args []string) int {
	fs := a.flags("run", "--image PATH|URL --prompt TEXT [flags]")
	var in inputFlags
	in.register(fs, true)
	out := fs.String("out", ".", "directory the images are written to")
	a.startTimeoutFlag(fs)
	if code, done := a.flagsOnly(fs, args); done {
		return code
	}
	input, opts, err := in.build(fs)
	if err != nil {
		return a.fail(err)
	}
	if err := checkOut(*out); err != nil {
		return a.fail(err)
	}
	c, stop, simulated, err := a.clientOrSimulator()
	if err != nil {
		return a.fail(err)
	}
	defer stop()
	ctx, cancel := a.context()
	defer cancel()
	p := newProgress(a.stderr, clientFailing(c))
	var id string
	opts = append(opts,
		wrapper.WithOnQueued(func(q *wrapper.Queued) {
			id = q.RequestID
			p.line("request id: " + printable(q.RequestID))
		}),
		wrapper.WithOnUpdate(p.update))
	result, err := c.Run(ctx, input, opts...)
	p.finish()
	if err != nil {
		return a.fail(err)
	}
	// The built-in simulator's URLs die with this process: only the saved
	// files are worth printing.
	return a.save(ctx, c, id, &result.Output, *out, !simulated)
}

// save writes the output's images and reports them; withURLs adds the
// image URLs to --json (not for a server that is gone when we exit).
func (a *app) save(ctx context.Context, c *wrapper.Client, id string, result *gen.Output, dir string, withURLs bool) int {
	paths, err := c.SaveImages(ctx, result, dir, id)
	if err != nil {
		return a.fail(fmt.Errorf("request %s: saving the images: %w", id, err))
	}
	if a.asJSON {
		images := make([]map[string]any, len(result.Images))
		for i, img := range result.Images {
			images[i] = map[string]any{"path": paths[i], "content_type": img.ContentType, "width": img.Width, "height": img.Height}
			if withURLs && len(img.URL) < 2048 {
				images[i]["url"] = img.URL
			}
		}
		a.printJSON(map[string]any{"request_id": id, "images": images, "seed": result.Seed, "prompt": result.Prompt, "timings": result.Timings, "has_nsfw_concepts": result.HasNsfwConcepts})
		return exitOK
	}
	for _, p := range paths {
		fmt.Fprintln(a.stdout, p)
	}
	return exitOK
}

func (a *app) submit(args []string) int {
	fs := a.flags("submit", "--image PATH|URL --prompt TEXT [flags]")
	var in inputFlags
	in.register(fs, true)
	fs.StringVar(&in.webhook, "webhook", "", "URL fal POSTs the outcome to")
	a.startTimeoutFlag(fs)
	if code, done := a.flagsOnly(fs, args); done {
		return code
	}
	input, opts, err := in.build(fs)
	if err != nil {
		return a.fail(err)
	}
	c, code := a.apiClient()
	if c == nil {
		return code
	}
	ctx, cancel := a.context()
	defer cancel()
	q, err := c.Submit(ctx, input, append(opts, wrapper.WithAtMostOnce())...)
	if err != nil {
		return a.fail(err)
	}
	if a.asJSON {
		a.printJSON(map[string]any{"request_id": q.RequestID, "queue_position": q.QueuePosition})
	} else {
		fmt.Fprintln(a.stdout, printable(q.RequestID))
	}
	return exitOK
}

// flagsOnly parses the flags of a subcommand that takes no positional
// argument; done is set (with the exit code) for --help, errors and
// stray arguments.
func (a *app) flagsOnly(fs *flag.FlagSet, args []string) (code int, done bool) {
	pos, code, done := a.parse(fs, args)
	if done {
		return code, true
	}
	if err := a.checkConfig(); err != nil {
		return a.fail(err), true
	}
	if len(pos) > 0 {
		name := strings.TrimPrefix(fs.Name(), "fluxi2i ")
		fmt.Fprintf(a.stderr, "fluxi2i %s: unexpected argument %q\nRun 'fluxi2i help %s' for its flags.\n", name, printable(pos[0]), name)
		return exitUsage, true
	}
	return 0, false
}

// idCommand parses the flags and the one REQUEST_ID of a subcommand that
// acts on a job, and makes its client; a nil client comes with the exit
// code.
func (a *app) idCommand(fs *flag.FlagSet, args []string) (string, *wrapper.Client, int) {
	pos, code, done := a.parse(fs, args)
	if done {
		return "", nil, code
	}
	if err := a.checkConfig(); err != nil {
		return "", nil, a.fail(err)
	}
	id, ok := a.oneID(fs, pos)
	if !ok {
		return "", nil, exitUsage
	}
	c, code := a.apiClient()
	return id, c, code
}

func (a *app) status(args []string) int {
	fs := a.flags("status", "REQUEST_ID [--logs]")
	logs := fs.Bool("logs", false, fmt.Sprintf("include the job's log lines (at most %d, %d KiB; a line cut at %d bytes)", maxLogLines, maxLogBytes>>10, maxLogLineSize))
	id, c, code := a.idCommand(fs, args)
	if c == nil {
		return code
	}
	ctx, cancel := a.context()
	defer cancel()
	st, err := c.Status(ctx, id, *logs)
	if err != nil {
		return a.fail(err)
	}
	if a.asJSON {
		a.stdout.Write(append(st.Raw, '\n'))
		return exitOK
	}
	line := printable(st.Status)
	if st.QueuePosition != nil {
		line += fmt.Sprintf(" (queue position %d)", *st.QueuePosition)
	}
	if e := endedWithout(st); e != "" {
		line += ", without a result: " + e
	}
	fmt.Fprintln(a.stdout, line)
	if st.Logs != nil {
		// A hostile or broken server may send endless logs: run's caps.
		p := logsOnly(a.stdout, a.stderr, "  ")
		for _, l := range *st.Logs {
			p.logLine(l.Message)
		}
		p.finish()
	}
	return exitOK
}

func (a *app) resultOrWait(name string, args []string) int {
	fs := a.flags(name, "REQUEST_ID [--out DIR]")
	out := fs.String("out", ".", "directory the images are written to")
	id, c, code := a.idCommand(fs, args)
	if c == nil {
		return code
	}
	if err := checkOut(*out); err != nil {
		return a.fail(err)
	}
	ctx, cancel := a.context()
	defer cancel()
	var result *wrapper.Result
	var err error
	if name == "wait" {
		p := newProgress(a.stderr, clientFailing(c))
		// The job was started elsewhere: leave it running if we give up.
		result, err = c.Wait(ctx, id, wrapper.WithOnUpdate(p.update), wrapper.WithCancelOnExit(0))
		p.finish()
	} else {
		result, err = c.Result(ctx, id)
	}
	if err != nil {
		return a.fail(err)
	}
	return a.save(ctx, c, id, &result.Output, *out, true)
}

func (a *app) cancel(args []string) int {
	fs := a.flags("cancel", "REQUEST_ID")
	id, c, code := a.idCommand(fs, args)
	if c == nil {
		return code
	}
	ctx, cancel := a.context()
	defer cancel()
	if err := c.Cancel(ctx, id); err != nil {
		if errors.Is(err, wrapper.ErrAlreadyCompleted) {
			// A job that ended with an error (cancelled before, or failed)
			// has no result to fetch: say so instead.
			if st, serr := c.Status(ctx, id, false); serr == nil && endedWithout(st) != "" {
				fmt.Fprintf(a.stderr, "fluxi2i: request %s had already ended without a result: %s\n", printable(id), endedWithout(st))
			} else {
				fmt.Fprintf(a.stderr, "fluxi2i: request %s had already completed; fetch it with: fluxi2i result %s\n", printable(id), printable(id))
			}
		}
		return a.fail(err)
	}
	if a.asJSON {
		a.printJSON(map[string]any{"request_id": id, "status": "CANCELLATION_REQUESTED"})
	} else {
		fmt.Fprintf(a.stdout, "cancellation requested for %s\n", id)
	}
	return exitOK
}

// proxy serves wrapper/proxy at /api/fal/proxy, for fal's browser clients
// (proxyUrl): in front of the configured base URL, or of the built-in
// simulator when there is no key.
func (a *app) proxy(args []string) int {
	fs := a.endpointFlags("proxy", "[--addr HOST:PORT] [--base-url URL] [--api-key KEY] [--allow-anyone] [--cors ORIGIN]")
	addr := fs.String("addr", "127.0.0.1:8787", "address to listen on")
	anyone := fs.Bool("allow-anyone", false, "let anyone who can reach a non-loopback --addr use the key (a loopback address allows anyone by default)")
	var origins stringList
	fs.Var(&origins, "cors", "allow pages of this `ORIGIN` (scheme://host[:port]) to call the proxy cross-origin; repeatable")
	if code, done := a.flagsOnly(fs, args); done {
		return code
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return a.fail(&wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--addr", Message: err.Error()}}})
	}
	loopback := isLoopback(host)
	if !loopback && !*anyone {
		return a.fail(&wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--addr", Message: host + " is not a loopback address: anyone who reaches it could run the model on this key; add --allow-anyone to mean it, or serve wrapper/proxy with your own Authorize"}}})
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return a.fail(err)
	}
	defer ln.Close()
	// The built-in simulator's files and uploads are served on the
	// proxy's own origin: the page can reach them, from any machine that
	// reaches the proxy.
	public := "http://" + ln.Addr().String()
	c, sim, stop, err := a.clientOrSimulatorAt(public)
	if err != nil {
		return a.fail(err)
	}
	defer stop()
	upstream := ""
	if sim != nil {
		upstream = " (the built-in local simulator, NOT the real model)"
	}
	log := slog.New(slog.NewTextHandler(a.stderr, nil))
	opts := []proxy.Option{proxy.AllowAnyone(), proxy.Logger(log)}
	if loopback {
		// A page whose name is rebound to 127.0.0.1 must not reach it.
		opts = append(opts, proxy.LoopbackOnly())
	}
	if len(origins) > 0 {
		opts = append(opts, proxy.CORS(origins...))
	}
	h, err := proxy.New(c, opts...)
	if err != nil {
		return a.fail(&wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--cors", Message: err.Error()}}})
	}
	ln = limitListener(ln, proxyConns)
	mux := http.NewServeMux()
	mux.Handle(proxyPath, h)
	if sim != nil {
		for _, p := range queuetest.MediaPaths() {
			mux.Handle(p, sim)
		}
	}
	mux.Handle("/", notFoundLogged(log, "fluxi2i proxy", "not found: fal's proxyUrl protocol is served at "+proxyPath))
	srv := newServer(mux)
	fmt.Fprintf(a.stderr, "fluxi2i proxy: serving fal's proxyUrl protocol at http://%s%s, in front of %s%s\n", ln.Addr(), proxyPath, c.BaseURL(), upstream)
	if loopback {
		fmt.Fprintln(a.stderr, "fluxi2i proxy: anyone who can reach this loopback address may use it (no Authorize): for development only; requests must name localhost or a loopback address as Host")
	} else {
		fmt.Fprintln(a.stderr, "fluxi2i proxy: --allow-anyone: anyone who can reach this address may run the model on this key")
	}
	fmt.Fprintf(a.stderr, "fluxi2i proxy: health at http://%s/healthz, metrics at http://%s/metrics\n", ln.Addr(), ln.Addr())
	return a.serve(srv, ln, func() []serve.Metric { return proxyMetrics(h, c) }, log, "fluxi2i proxy")
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// serve runs srv on ln until the context ends (SIGINT, SIGTERM), with
// GET /healthz and GET /metrics (from metrics): then /healthz turns 503
// for a second while the listener still answers, requests in flight get
// serveGrace to finish, the streams left are cut, and it exits 0. Bound
// to loopback, every path (/healthz and /metrics too) refuses a Host that
// is not a loopback address or localhost, logged on log as who's.
func (a *app) serve(srv *http.Server, ln net.Listener, metrics func() []serve.Metric, log *slog.Logger, who string) int {
	s := serve.New(srv, metrics)
	srv.Handler = loopbackHosts(ln, srv.Handler, log, who)
	s.Drain, s.Grace = serveDrain, serveGrace
	if err := s.Serve(a.ctx, ln); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// The graceful stop's times (tests shorten them).
var (
	serveDrain = time.Second
	serveGrace = 5 * time.Second
)

// newServer serves h with the limits that make it safe to expose:
// slow or idle connections are dropped (headers within 10 s, a request
// within 2 min, 60 s idle), headers are capped at 64 KiB. Write time is
// not bounded: a status stream lasts as long as its job.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// endedWithout describes how a job ended without a result (cancelled,
// failed), or is "" when it did not.
func endedWithout(st *wrapper.Status) string {
	e, t := "", ""
	if st.Error != nil {
		e = *st.Error
	}
	if st.ErrorType != nil {
		t = *st.ErrorType
	}
	switch {
	case st.Status != wrapper.StatusCompleted && st.Status != wrapper.StatusInQueue && st.Status != wrapper.StatusInProgress:
		if e == "" {
			e = "the job ended as " + st.Status
		}
	case e == "" && t == "":
		return ""
	}
	if t == "client_cancelled" && e == "" {
		e = "cancelled"
	}
	if t != "" {
		e = t + ": " + e
	}
	return printable(strings.TrimSuffix(e, ": "))
}

func (a *app) simulate(args []string) int {
	fs := a.bareFlags("simulate", "[--addr HOST:PORT] [--api-key KEY] [--fetch-images] [--max-memory MIB] [--public-url URL] [--webhooks]")
	addr := fs.String("addr", "127.0.0.1:8787", "address to listen on")
	fetch := fs.Bool("fetch-images", false, "download http(s) image_url inputs (public addresses only); default: render a picture derived from the URL, offline")
	key := fs.String("api-key", "", "accept only this key (Bearer or Key scheme); default: any key")
	queue := fs.Duration("queue-time", 600*time.Millisecond, "how long each job stays IN_QUEUE")
	runFor := fs.Duration("run-time", 1500*time.Millisecond, "how long each job stays IN_PROGRESS")
	hooks := fs.Bool("webhooks", false, "deliver webhooks (fal_webhook, submit --webhook) as fal does, signed with a fresh key served at "+queuetest.JWKSPath+"; off by default: it POSTs to whatever URL a client names")
	public := fs.String("public-url", "", "the URL clients reach the simulator at, for the job and image URLs it hands out (default: http:// and its listen address; never a request's Host)")
	budget := fs.Int64("max-memory", simulator.DefaultMaxBytes>>20, "memory budget in MiB: what the simulator holds at once of inputs, renders and outputs (a client may hold a quarter); past it submits get 429")
	if code, done := a.flagsOnly(fs, args); done {
		return code
	}
	if *budget < 16 {
		return a.fail(&wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--max-memory", Message: fmt.Sprintf("%d MiB: give at least 16", *budget)}}})
	}
	maxBytes := *budget << 20
	limitMemory(maxBytes)
	opts := append(simulator.Options(simulator.Config{FetchImages: *fetch, MaxBytes: maxBytes}), queuetest.QueueTime(*queue), queuetest.RunTime(*runFor))
	if *key != "" {
		opts = append(opts, queuetest.WithAPIKey(*key))
	}
	if *hooks {
		signer := webhooktest.NewSigner()
		signer.HTTPClient = &http.Client{Transport: keepAliveTransport(), Timeout: queuetest.WebhookAttemptTimeout}
		opts = append(opts, queuetest.Webhooks(signer))
	}
	if *public != "" {
		if u, err := url.Parse(*public); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return a.fail(&wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--public-url", Message: fmt.Sprintf("%q: give an http(s) origin, such as https://sim.example:8443", *public)}}})
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return a.fail(err)
	}
	if *public == "" {
		*public = "http://" + ln.Addr().String()
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
			*public = "http://" + net.JoinHostPort("localhost", strconv.Itoa(ta.Port))
			fmt.Fprintf(a.stderr, "fluxi2i simulate: listening on every address: the image URLs it hands out name %s; give --public-url for other machines\n", *public)
		}
	}
	opts = append(opts, queuetest.PublicURL(*public))
	q := queuetest.New(opts...)
	defer q.Close()
	srv := newServer(q)
	fmt.Fprintf(a.stderr, "fluxi2i simulate: serving the local simulator (NOT the real model) at http://%s\n", ln.Addr())
	fmt.Fprintf(a.stderr, "fluxi2i simulate: memory budget %d MiB (a client may hold a quarter of it, and of the %d jobs held)\n", *budget, simulator.MaxJobs)
	fmt.Fprintf(a.stderr, "fluxi2i simulate: point clients at it, e.g. fluxi2i run --base-url http://%s ...\n", ln.Addr())
	if *hooks {
		fmt.Fprintf(a.stderr, "fluxi2i simulate: --webhooks: job outcomes are POSTed to any fal_webhook URL a client names, signed for user %s; verify them with the key set at http://%s%s\n", webhooktest.DefaultUserID, ln.Addr(), queuetest.JWKSPath)
	}
	fmt.Fprintf(a.stderr, "fluxi2i simulate: health at http://%s/healthz, metrics at http://%s/metrics\n", ln.Addr(), ln.Addr())
	return a.serve(srv, ln, func() []serve.Metric { return simulatorMetrics(q) }, slog.New(slog.NewTextHandler(a.stderr, nil)), "fluxi2i simulate")
}

// limitMemory sets the Go runtime's soft memory limit (unless GOMEMLIMIT
// says otherwise) to simulator.MemoryLimit: the budget bounds live bytes,
// the limit keeps garbage from piling up over them.
func limitMemory(budget int64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(simulator.MemoryLimit(budget))
}
