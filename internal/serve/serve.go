// Package serve runs the servers a person starts (fluxi2i proxy, fluxi2i
// simulate): GET /healthz (200 once listening, 503 while shutting down),
// GET /metrics (their counters in Prometheus' text format), and a graceful
// stop: when the context ends the listener closes, requests in flight get
// a bounded time to finish, then the rest (status streams) are cut.
//
// The text format is written here rather than with a Prometheus client
// library: a handful of counters and gauges in a stable format of a few
// lines keeps the CLI's dependencies to the standard library.
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Metric is one metric family: a counter or a gauge with its samples.
type Metric struct {
	Name, Help string
	Gauge      bool // a gauge; a counter otherwise
	Samples    []Sample
}

// Sample is one value of a metric, with its labels.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Write writes metrics in Prometheus' text exposition format (0.0.4).
func Write(w io.Writer, metrics []Metric) error {
	var b strings.Builder
	for _, m := range metrics {
		typ := "counter"
		if m.Gauge {
			typ = "gauge"
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.Name, escapeHelp(m.Help), m.Name, typ)
		for _, s := range m.Samples {
			b.WriteString(m.Name)
			if len(s.Labels) > 0 {
				keys := make([]string, 0, len(s.Labels))
				for k := range s.Labels {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				b.WriteByte('{')
				for i, k := range keys {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, "%s=\"%s\"", k, escapeLabel(s.Labels[k]))
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(formatValue(s.Value))
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

// Server is an http.Server with health, metrics and a graceful stop.
type Server struct {
	srv     *http.Server
	ready   atomic.Bool
	metrics func() []Metric
	// Drain is how long the server keeps serving, /healthz answering 503,
	// once the context ends, so that a load balancer stops sending before
	// the listener closes (default 0).
	Drain time.Duration
	// Grace is how long requests in flight may take to finish once the
	// listener closed, before the rest are cut (default 10 s).
	Grace time.Duration
}

// New wraps srv: its handler answers /healthz and /metrics (from metrics)
// before anything else.
func New(srv *http.Server, metrics func() []Metric) *Server {
	s := &Server{srv: srv, metrics: metrics, Grace: 10 * time.Second}
	app := srv.Handler
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.Handle("/", app)
	srv.Handler = mux
	return s
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "shutting down\n")
		return
	}
	io.WriteString(w, "ok\n")
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	var ms []Metric
	if s.metrics != nil {
		ms = s.metrics()
	}
	ms = append(ms, Metric{Name: "fluxi2i_up", Help: "1 while serving, 0 while shutting down.", Gauge: true,
		Samples: []Sample{{Value: map[bool]float64{true: 1, false: 0}[s.ready.Load()]}}})
	Write(w, ms)
}

// Ready reports whether the server is serving and not shutting down.
func (s *Server) Ready() bool { return s.ready.Load() }

// Serve serves on ln until ctx ends, then stops gracefully: /healthz
// turns 503 at once, the listener closes after Drain, requests in flight
// get Grace to finish and the rest are cut. It returns nil after a stop, or the
// error that ended serving.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	s.ready.Store(true)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.ready.Store(false)
		return err
	case <-ctx.Done():
	}
	s.ready.Store(false)
	if s.Drain > 0 {
		t := time.NewTimer(s.Drain)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.Grace)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close() // cut what is left: status streams last as long as their jobs
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
