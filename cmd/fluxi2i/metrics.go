package main

import (
	"github.com/fluxi2i/fluxi2i/internal/serve"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// counter and gauge are one-sample metrics.
func counter(name, help string, v int64) serve.Metric {
	return serve.Metric{Name: name, Help: help, Samples: []serve.Sample{{Value: float64(v)}}}
}

func gauge(name, help string, v int64) serve.Metric {
	return serve.Metric{Name: name, Help: help, Gauge: true, Samples: []serve.Sample{{Value: float64(v)}}}
}

// proxyMetrics are fluxi2i proxy's counters, and its client's.
func proxyMetrics(h *proxy.Handler, c *wrapper.Client) []serve.Metric {
	st := h.Stats()
	refused := serve.Metric{Name: "fluxi2i_proxy_refused_total", Help: "Requests the proxy refused, by reason."}
	for reason, n := range st.Refused {
		refused.Samples = append(refused.Samples, serve.Sample{Labels: map[string]string{"reason": reason}, Value: float64(n)})
	}
	return append([]serve.Metric{
		counter("fluxi2i_proxy_forwarded_total", "Requests the proxy forwarded upstream.", st.Forwarded),
		refused,
	}, clientMetrics(c)...)
}

// clientMetrics are a client's counters (Stats).
func clientMetrics(c *wrapper.Client) []serve.Metric {
	st := c.Stats()
	failing := int64(0)
	if !st.FailingSince.IsZero() {
		failing = 1
	}
	return []serve.Metric{
		counter("fluxi2i_client_retries_total", "Attempts beyond the first, all operations.", st.Retries),
		counter("fluxi2i_client_settled_total", "Lost submits whose job the request history found.", st.Settled),
		counter("fluxi2i_client_unsettled_total", "Lost submits the request history could not settle.", st.Unsettled),
		gauge("fluxi2i_client_failing", "1 while the client's requests keep failing.", failing),
	}
}

// simulatorMetrics are fluxi2i simulate's counters.
func simulatorMetrics(q *queuetest.Server) []serve.Metric {
	st := q.Stats()
	return []serve.Metric{
		counter("fluxi2i_simulator_submits_total", "Submit requests received.", st.Submits),
		counter("fluxi2i_simulator_jobs_total", "Jobs queued.", st.Jobs),
		counter("fluxi2i_simulator_status_calls_total", "Status requests.", st.StatusCalls),
		counter("fluxi2i_simulator_stream_calls_total", "Status streams opened.", st.StreamCalls),
		counter("fluxi2i_simulator_result_calls_total", "Result requests.", st.ResultCalls),
		counter("fluxi2i_simulator_cancelled_total", "Jobs a cancel stopped.", st.Cancelled),
		counter("fluxi2i_simulator_unauthorized_total", "Requests refused with 401.", st.Unauthorized),
		counter("fluxi2i_simulator_refused_total", "Requests refused with 429 for a cap (jobs, memory, a client's share).", st.Refused),
		counter("fluxi2i_simulator_file_downloads_total", "Result images served.", st.FileDownloads),
		gauge("fluxi2i_simulator_bytes_held", "Bytes held against the memory budget.", st.BytesHeld),
		gauge("fluxi2i_simulator_peak_bytes_held", "The most bytes held at once.", st.PeakBytesHeld),
	}
}
