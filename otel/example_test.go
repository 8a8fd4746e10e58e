package fluxi2iotel_test

import (
	"log"

	fluxi2iotel "github.com/fluxi2i/fluxi2i/otel"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// Tracing and metrics for every job of a client, through the global
// TracerProvider and MeterProvider the program set up.
func ExampleOption() {
	c, err := wrapper.New(wrapper.WithFalKey("FAL_KEY"), fluxi2iotel.Option())
	if err != nil {
		log.Fatal(err)
	}
	_ = c // c.Run(ctx, in) is a "generate_content fal-ai/flux-1/dev/image-to-image" span, each HTTP attempt a child
}
