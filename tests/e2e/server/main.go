// Command server serves the e2e test page, and with -base-url mounts
// wrapper/proxy beside it at /api/fal/proxy: the same-origin setup of a
// web app (a page and its back end on one origin, proxyUrl
// "/api/fal/proxy"). Without -base-url it serves the page alone, for the
// cross-origin case in front of `fluxi2i proxy --cors`. It prints
// "e2e server: http://HOST:PORT" on stderr once it listens and serves
// until interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	page := flag.String("page", ".", "directory of the page (index.html, bundle.js)")
	baseURL := flag.String("base-url", "", "mount the proxy in front of this queue (a `fluxi2i simulate`); empty: the page only")
	apiKey := flag.String("api-key", "e2e-key", "the proxy's key for -base-url")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *addr, *page, *baseURL, *apiKey); err != nil {
		fmt.Fprintln(os.Stderr, "e2e server:", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, addr, page, baseURL, apiKey string) error {
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(page)))
	if baseURL != "" {
		c, err := wrapper.New(wrapper.WithBaseURL(baseURL), wrapper.WithAPIKey(apiKey))
		if err != nil {
			return err
		}
		p, err := proxy.New(c, proxy.AllowAnyone(), proxy.Logger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
		if err != nil {
			return err
		}
		mux.Handle("/api/fal/proxy", p)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "e2e server: http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
