package simulator_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/simulator"
)

// The realistic simulator in another module's tests or local
// development: a loopback base URL needs no key.
func Example() {
	srv := queuetest.NewServer(simulator.Options(simulator.Config{})...)
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithHTTPClient(srv.Client()))
	if err != nil {
		log.Fatal(err)
	}
	seed := int64(7)
	res, err := c.Run(context.Background(), gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a watercolour cat", Seed: &seed})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(res.Images), *res.Images[0].Width, res.Seed)
	// Output: 1 512 7
}
