package batch_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// Run the same batch twice: the second run finds every job done in the
// journal, checks the files, and sends nothing.
func ExampleRun() {
	srv := queuetest.NewServer(queuetest.QueueTime(10*time.Millisecond), queuetest.RunTime(10*time.Millisecond))
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(srv.Client()))
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "fluxi2i-batch")
	defer os.RemoveAll(dir)
	jobs := []batch.Job{
		{ID: "tabby", Input: gen.Input{ImageURL: "https://example.com/tabby.png", Prompt: "a wizard cat"}},
		{ID: "siamese", Input: gen.Input{ImageURL: "https://example.com/siamese.png", Prompt: "a knight cat"}},
	}
	for range 2 {
		sum, err := batch.Run(context.Background(), c, jobs, batch.Config{Dir: dir})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("done %d, skipped %d\n", sum.Done, sum.Skipped)
	}
	fmt.Println(srv.Stats().Jobs, "jobs submitted in all")
	// Output:
	// done 2, skipped 0
	// done 0, skipped 2
	// 2 jobs submitted in all
}
