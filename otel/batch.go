package fluxi2iotel

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fluxi2i/fluxi2i/wrapper/batch"
)

// BatchProgress returns a batch.Config.OnProgress function that exports a
// batch's progress as metrics, read when the MeterProvider collects:
// fluxi2i.batch.jobs (gauge; fluxi2i.batch.state: done, failed, skipped,
// in_flight, total) and fluxi2i.batch.billable_units (what this run was
// billed so far). stop unregisters them when the batch is over.
func BatchProgress(settings ...Setting) (onProgress func(batch.Progress), stop func(), err error) {
	cfg := newConfig(settings)
	m := cfg.mp.Meter(ScopeName)
	var mu sync.Mutex
	var last batch.Progress
	jobs, err := m.Int64ObservableGauge("fluxi2i.batch.jobs", metric.WithUnit("{job}"),
		metric.WithDescription("A batch's jobs, by state."))
	if err != nil {
		return nil, nil, err
	}
	units, err := m.Float64ObservableGauge("fluxi2i.batch.billable_units", metric.WithUnit("{unit}"),
		metric.WithDescription("What the batch's run was billed so far."))
	if err != nil {
		return nil, nil, err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		mu.Lock()
		p := last
		mu.Unlock()
		for state, n := range map[string]int{"done": p.Done, "failed": p.Failed, "skipped": p.Skipped, "in_flight": p.InFlight, "total": p.Total} {
			o.ObserveInt64(jobs, int64(n), metric.WithAttributes(attribute.String("fluxi2i.batch.state", state)))
		}
		o.ObserveFloat64(units, p.BillableUnits)
		return nil
	}, jobs, units)
	if err != nil {
		return nil, nil, err
	}
	return func(p batch.Progress) {
			mu.Lock()
			last = p
			mu.Unlock()
		}, func() {
			reg.Unregister()
		}, nil
}
