package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// offProvider is the provider while tracing is off. It differs from
// noop.TracerProvider only in not wrapping a root span into a new context,
// which saves the one allocation a span would otherwise cost a hot path.
type offProvider struct{ noop.TracerProvider }

func (offProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return offTracer{} }

type offTracer struct{ noop.Tracer }

// Start hands back ctx and the span already in it whenever that span is
// non-recording (none at all, or a remote parent being passed through), so
// nothing changes and nothing is allocated. A recording span from some
// other provider is never returned, so ending "our" span cannot end it.
func (offTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if span := trace.SpanFromContext(ctx); !span.IsRecording() {
		return ctx, span
	}
	return noop.Tracer{}.Start(ctx, name, opts...)
}
