package fluxi2iotel

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

// ProxyOption returns the proxy.Option that instruments a proxy.Handler:
// each forwarded request is a CLIENT span (a child of the span in the
// request's context, the server span of an instrumented mux) named by
// its method, with fluxi2i.operation, gen_ai.response.id and
// http.response.status_code, whose context goes upstream as traceparent
// (without a server span the browser's own traceparent is passed on);
// each refusal is an event on the request's span. Metrics:
// fluxi2i.proxy.forwarded (counter; fluxi2i.operation,
// http.response.status_code), fluxi2i.proxy.refused (counter;
// fluxi2i.refusal.reason, http.response.status_code) and
// fluxi2i.proxy.duration (histogram, s).
func ProxyOption(settings ...Setting) proxy.Option {
	return proxy.WithObserver(NewProxyObserver(settings...))
}

// NewProxyObserver returns the proxy.Observer behind ProxyOption.
func NewProxyObserver(settings ...Setting) proxy.Observer {
	cfg := newConfig(settings)
	m := cfg.mp.Meter(ScopeName)
	p := &proxyObserver{tracer: cfg.tp.Tracer(ScopeName), prop: cfg.prop}
	p.forwarded, _ = m.Int64Counter("fluxi2i.proxy.forwarded", metric.WithUnit("{request}"),
		metric.WithDescription("Requests the proxy forwarded upstream."))
	p.refused, _ = m.Int64Counter("fluxi2i.proxy.refused", metric.WithUnit("{request}"),
		metric.WithDescription("Requests the proxy refused, by reason."))
	p.duration, _ = m.Float64Histogram("fluxi2i.proxy.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of forwarded requests, the answer passed on."))
	return p
}

type proxyObserver struct {
	tracer             trace.Tracer
	prop               propagation.TextMapPropagator
	forwarded, refused metric.Int64Counter
	duration           metric.Float64Histogram
}

type forwardKey struct{}

func (p *proxyObserver) StartForward(ctx context.Context, up *http.Request, operation string) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// No server span: the browser's traceparent (already on up) is the
		// parent of this span.
		ctx = p.prop.Extract(ctx, propagation.HeaderCarrier(up.Header))
	}
	host, port := hostPort(up.URL.String())
	ctx, span := p.tracer.Start(ctx, up.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("http.request.method", up.Method),
		attribute.String("server.address", host),
		attribute.Int("server.port", port),
		attribute.String("fluxi2i.operation", operation),
	))
	p.prop.Inject(ctx, propagation.HeaderCarrier(up.Header))
	return context.WithValue(ctx, forwardKey{}, span)
}

func (p *proxyObserver) EndForward(ctx context.Context, f proxy.Forwarded) {
	attrs := []attribute.KeyValue{attribute.String("fluxi2i.operation", f.Operation), attribute.Int("http.response.status_code", f.StatusCode)}
	p.forwarded.Add(ctx, 1, metric.WithAttributes(attrs...))
	p.duration.Record(ctx, f.Duration.Seconds(), metric.WithAttributes(attrs...))
	span, _ := ctx.Value(forwardKey{}).(trace.Span)
	if span == nil {
		return
	}
	if f.RequestID != "" {
		span.SetAttributes(attribute.String("gen_ai.response.id", f.RequestID))
	}
	if f.StatusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", f.StatusCode))
	}
	if f.StatusCode == 0 || f.StatusCode >= 500 {
		et := "unreachable"
		if f.StatusCode != 0 {
			et = strconv.Itoa(f.StatusCode)
		}
		span.SetAttributes(attribute.String("error.type", et))
		span.SetStatus(codes.Error, et)
	}
	span.End()
}

func (p *proxyObserver) Refused(ctx context.Context, r proxy.Refusal) {
	attrs := []attribute.KeyValue{attribute.String("fluxi2i.refusal.reason", r.Reason), attribute.Int("http.response.status_code", r.StatusCode)}
	p.refused.Add(ctx, 1, metric.WithAttributes(attrs...))
	trace.SpanFromContext(ctx).AddEvent("fluxi2i.proxy.refused", trace.WithAttributes(append(attrs, attribute.String("fluxi2i.refusal.detail", r.Detail))...))
}
