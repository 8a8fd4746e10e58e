package fluxi2iotel_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	fluxi2iotel "github.com/fluxi2i/fluxi2i/otel"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkJob runs whole jobs (submit, status stream, result) on a fake
// queue over loopback, without and with the instrumentation (the SDK with
// every span sampled and exported to a no-op exporter, metrics kept by a
// manual reader), in the same run: cpu-ms/job is the process's CPU per
// job, server included (the same in both). "instant" jobs are done when
// submitted (the fixed cost of a job); "queued" ones pass through the
// queue's positions and run with log lines, as the simulator's do.
func BenchmarkJob(b *testing.B) {
	b.Run("instant", func(b *testing.B) {
		benchJobs(b, 1, queuetest.QueueTime(0), queuetest.RunTime(0), queuetest.LogLines(0))
	})
	// A job as the simulator runs one, scaled down: queued with its
	// positions, running with log lines; 32 at once.
	b.Run("queued", func(b *testing.B) {
		benchJobs(b, 32, queuetest.QueueTime(30*time.Millisecond), queuetest.RunTime(60*time.Millisecond), queuetest.LogLines(3))
	})
}

func benchJobs(b *testing.B, parallel int, opts ...queuetest.Option) {
	srv := queuetest.NewServer(opts...)
	defer srv.Close()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	for _, v := range []struct {
		name  string
		extra []wrapper.Option
	}{
		{"plain", nil},
		{"otel", []wrapper.Option{fluxi2iotel.Option(fluxi2iotel.WithTracerProvider(tp), fluxi2iotel.WithMeterProvider(mp))}},
		// Spans not sampled (the hook, the metrics and the trace context
		// still at work): what a sampler that drops most traces costs.
		{"otel-unsampled", []wrapper.Option{fluxi2iotel.Option(fluxi2iotel.WithTracerProvider(unsampled), fluxi2iotel.WithMeterProvider(mp))}},
	} {
		name, extra := v.name, v.extra
		b.Run(name, func(b *testing.B) {
			c, err := wrapper.New(append([]wrapper.Option{wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("t"),
				wrapper.WithEnvironment(nil), wrapper.WithHTTPClient(srv.Client())}, extra...)...)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuTime()
			b.ResetTimer()
			b.SetParallelism(parallel)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Run(ctx, input()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/job")
		})
	}
}
