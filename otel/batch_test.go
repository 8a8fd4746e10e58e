package fluxi2iotel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fluxi2i/fluxi2i/gen"
	fluxi2iotel "github.com/fluxi2i/fluxi2i/otel"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
)

// A batch's progress, exported as metrics.
func TestBatchProgressMetrics(t *testing.T) {
	f := setup(t, nil)
	reader := sdkmetric.NewManualReader()
	on, stop, err := fluxi2iotel.BatchProgress(fluxi2iotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	require.NoError(t, err)
	defer stop()
	jobs := []batch.Job{{ID: "a", Input: gen.Input{ImageURL: "https://example.com/a.png", Prompt: "p"}}, {ID: "b", Input: gen.Input{ImageURL: "https://example.com/b.png", Prompt: "q"}}}
	_, err = batch.Run(context.Background(), f.c, jobs, batch.Config{Dir: t.TempDir(), OnProgress: on})
	require.NoError(t, err)
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	got := map[string]int64{}
	var units float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					st, _ := dp.Attributes.Value("fluxi2i.batch.state")
					got[st.AsString()] = dp.Value
				}
			case metricdata.Gauge[float64]:
				units = d.DataPoints[0].Value
			}
		}
	}
	assert.EqualValues(t, 2, got["done"])
	assert.EqualValues(t, 2, got["total"])
	assert.Zero(t, got["in_flight"])
	assert.EqualValues(t, 2, units)
}
