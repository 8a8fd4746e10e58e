package queuetest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// Inject scripts faults: here the queue refuses twice with 503 and then
// loses an answer after queueing the job. The client retries, and the
// server's counters tell what happened.
func ExampleServer_Inject() {
	srv := queuetest.NewServer(queuetest.QueueTime(10*time.Millisecond), queuetest.RunTime(10*time.Millisecond))
	defer srv.Close()
	srv.Inject(queuetest.OpSubmit, queuetest.Fail(503), queuetest.Fail(503))
	srv.Inject(queuetest.OpResult, queuetest.DropBefore())

	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(srv.Client()),
		wrapper.WithBackoff(func(int) time.Duration { return time.Millisecond }))
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Run(context.Background(), gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a cat"})
	if err != nil {
		log.Fatal(err)
	}
	st := srv.Stats()
	fmt.Println(len(res.Images), "image;", st.Submits, "submits,", st.Jobs, "job,", st.FaultsInjected, "faults")
	// Output: 1 image; 3 submits, 1 job, 3 faults
}
