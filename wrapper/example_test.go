package wrapper_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// Run submits a job and waits for its images. Here the queue is the
// in-process fake of package queuetest; in production, drop WithBaseURL and
// WithHTTPClient and pass your token.
func ExampleClient_Run() {
	srv := queuetest.NewServer(queuetest.QueueTime(20*time.Millisecond), queuetest.RunTime(20*time.Millisecond))
	defer srv.Close()

	c, err := wrapper.New(
		wrapper.WithBaseURL(srv.URL),
		wrapper.WithBearerToken("my-token"),
		wrapper.WithHTTPClient(srv.Client()),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	steps := 0
	n := 2
	out, err := c.Run(ctx, gen.Input{
		ImageURL:  "https://example.com/cat.png",
		Prompt:    "a cat dressed as a wizard",
		NumImages: &n,
	}, wrapper.WithOnUpdate(func(s wrapper.Status) { steps += len(s.NewLogs) }))
	var je *wrapper.JobError
	if errors.As(err, &je) {
		log.Fatalf("job %s: %v (resume with c.Wait)", je.RequestID, err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(out.Images), "images,", steps, "log lines")
	// Output: 2 images, 3 log lines
}

// Submit returns at once with the request id; Wait picks the job up later,
// even from another process.
func ExampleClient_Wait() {
	srv := queuetest.NewServer(queuetest.QueueTime(10*time.Millisecond), queuetest.RunTime(10*time.Millisecond))
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithFalKey("my-key"), wrapper.WithHTTPClient(srv.Client()))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	q, err := c.Submit(ctx, gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a fox"})
	if err != nil {
		log.Fatal(err)
	}
	out, err := c.Wait(ctx, q.RequestID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out.Prompt)
	// Output: a fox
}

// Invalid input is refused before anything is sent, naming each field.
func ExampleValidate() {
	s := 2.0
	err := wrapper.Validate(gen.Input{ImageURL: "ftp://example.com/a.png", Prompt: "x", Strength: &s})
	fmt.Println(err)
	// Output: fluxi2i: invalid input: image_url: must be an http(s) URL or a base64 data URI of a jpeg, png, webp, gif or avif image; strength: 2 is out of range: allowed 0.01 to 1
}

// An input image from a file (or bytes, or a reader) is streamed into the
// request as a data URI; SaveImages writes the output images, whole or not
// at all, named after the request id.
func ExampleClient_SaveImages() {
	srv := queuetest.NewServer(queuetest.QueueTime(0), queuetest.RunTime(0))
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("my-token"), wrapper.WithHTTPClient(srv.Client()))
	if err != nil {
		log.Fatal(err)
	}
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")
	img, err := wrapper.ImageBytes(png) // or wrapper.ImageFile("cat.png")
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Run(context.Background(), gen.Input{Prompt: "a cat dressed as a wizard"}, wrapper.WithImage(img))
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "fluxi2i-example")
	defer os.RemoveAll(dir)
	paths, err := c.SaveImages(context.Background(), &res.Output, dir, "cat")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(paths[0]))
	// Output: cat-0.jpeg
}
