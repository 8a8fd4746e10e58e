package proxy_test

import (
	"errors"
	"log"
	"net/http"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

// The proxy in a net/http service: the app's own session check, one job
// space per user, and fal's JS client in the page configured with
// proxyUrl: "/api/fal/proxy".
func ExampleNew() {
	client, err := wrapper.New() // FLUXI2I_API_KEY or FAL_KEY from the environment
	if err != nil {
		log.Print(err)
		return
	}
	userOf := func(r *http.Request) string {
		c, err := r.Cookie("session")
		if err != nil {
			return ""
		}
		return c.Value // look the session up in a real app
	}
	p, err := proxy.New(client,
		proxy.Authorize(func(r *http.Request) error {
			if userOf(r) == "" {
				return errors.New("sign in first")
			}
			return nil
		}),
		proxy.UserOf(userOf))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/fal/proxy", p)
	_ = http.ListenAndServe // http.ListenAndServe("localhost:8080", mux)
}
