// Command fluxi2i runs FLUX.1 [dev] image-to-image from the command line.
//
//	fluxi2i run --image cat.png --prompt "a cat dressed as a wizard" --out out/
//
// With no API key and no --base-url, run uses a built-in local simulator
// (not the real model) so it works offline. Subcommands submit, status,
// result, cancel and wait act on a request id, so a job that outlived the
// terminal can be picked up again; batch runs a folder of images or a
// manifest, resumably; simulate serves the simulator for other clients;
// proxy serves fal's browser-client proxy protocol. Exit codes: 0 success,
// 1 other failure, 2 bad input or usage, 3 API error, 4 timeout or
// interrupt.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func environ() map[string]string {
	env := map[string]string{}
	for _, k := range []string{"FLUXI2I_API_KEY", "FLUXI2I_BASE_URL", "FAL_KEY"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	return env
}
