package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/waypointhq/waypoint/bus"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

var (
	errStalled   = errors.New("subscription stalled")
	errAbandoned = errors.New("ack wait abandoned")
)

// skippedError ends a session whose subscription jumped past more blocks
// than a repair fetches; the next session replays from the checkpoint.
type skippedError struct{ from, to uint64 } // blocks [from, to)

func (e *skippedError) Error() string {
	return fmt.Sprintf("subscription skipped blocks %d..%d", e.from, e.to-1)
}

// shard follows one shard: a loop of subscription sessions sharing the
// checkpoint.
type shard struct {
	in    *Ingester
	id    uint32
	label string // telemetry.ShardLabel(id)
	log   *slog.Logger

	mu sync.Mutex
	st ShardStats
	// liveStart is where a shard that started live, without a checkpoint,
	// resumes until its first ack.
	liveStart *uint64

	// saved: SavedCheckpoint holds a value written to (or read from) the
	// bucket.
	saved bool
	// seq (when hasSeq) is a stream sequence below which no event of
	// the shard newer than the checkpoint is stored: where a new pipeline
	// reads the stream back from.
	seq    uint64
	hasSeq bool

	// Only the run goroutine touches these.
	repairBlock uint64
	repairFails int
	// attrs is startReceive's buffer: the SDK copies start attributes
	// into the spans it records, so one slice serves every event.
	attrs []attribute.KeyValue
}

func newShard(in *Ingester, id uint32) *shard {
	return &shard{in: in, id: id, label: telemetry.ShardLabel(id), log: in.log.With("shard", id), st: ShardStats{Shard: id}}
}

func (s *shard) snapshot() ShardStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// checkpoint returns the highest acknowledged id.
func (s *shard) checkpoint() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Checkpoint, s.st.HasCheckpoint
}

func (s *shard) run(ctx context.Context) error {
	o := &s.in.opts
	bo := newBackoff(o.MinBackoff, o.MaxBackoff)
	for {
		pos, _, err := o.Bus.LoadPosition(ctx, s.id)
		if err == nil {
			s.mu.Lock()
			s.st.Checkpoint, s.st.HasCheckpoint, s.st.SavedCheckpoint = pos.ID, pos.HasID, pos.ID
			s.saved = pos.HasID
			s.seq, s.hasSeq = pos.Seq, pos.HasSeq
			s.mu.Unlock()
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		d := bo.next()
		s.log.Warn("ingest: load checkpoint failed, retrying", "err", err, "in", d)
		if !sleep(ctx, d) {
			return nil
		}
	}

	saveCtx, stopSaving := context.WithCancel(context.WithoutCancel(ctx))
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		s.saveLoop(saveCtx)
	}()

	bo.reset()
	var drainErr error
	var p *pipeline
	for {
		if p == nil {
			p = s.newPipeline()
		}
		before, _ := s.checkpoint()
		err := s.session(ctx, p)
		p.stalled = errors.Is(err, errStalled)
		if ctx.Err() != nil {
			drainErr = p.drain(o.ShutdownTimeout)
			break
		}
		if o.Bus.Conn().IsClosed() {
			// Nothing can be published any more: stop rather than spin.
			p.abandon()
			drainErr = fmt.Errorf("the bus connection is closed: %w", err)
			break
		}
		if p.failed() != nil {
			p.abandon()
			p = nil
		}
		after, _ := s.checkpoint()
		if after != before {
			bo.reset()
		}
		s.mu.Lock()
		s.st.Reconnects++
		s.mu.Unlock()
		if m := o.Metrics; m != nil {
			m.Reconnects.WithLabelValues(s.label).Inc()
		}
		var skip *skippedError
		if errors.As(err, &skip) && p != nil {
			// Replay from the checkpoint, once everything before the jump
			// is acknowledged: the replay then starts right at the jump,
			// where checkStart tells a skip from expired events.
			if err := p.drain(o.ShutdownTimeout); err != nil {
				s.log.Warn("ingest: drain before replay", "err", err)
			}
			p = nil
		}
		d := bo.next()
		s.log.Warn("ingest: subscription ended, reconnecting", "err", err, "in", d)
		if !sleep(ctx, d) {
			if p != nil {
				drainErr = p.drain(o.ShutdownTimeout)
			}
			break
		}
	}
	stopSaving()
	<-saved
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	saveErr := s.save(sctx)
	cp, _ := s.checkpoint()
	s.log.Info("ingest: shard stopped", "checkpoint", cp)
	if drainErr != nil || saveErr != nil {
		return fmt.Errorf("ingest: shard %d shutdown: %w", s.id, errors.Join(drainErr, saveErr))
	}
	return nil
}

func (s *shard) saveLoop(ctx context.Context) {
	t := time.NewTicker(s.in.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := s.save(sctx); err != nil && ctx.Err() == nil {
				s.log.Warn("ingest: save checkpoint failed", "err", err)
			}
			cancel()
		}
	}
}

// save writes the checkpoint if it moved since the last save.
func (s *shard) save(ctx context.Context) error {
	s.mu.Lock()
	cp, ok, saved := s.st.Checkpoint, s.st.HasCheckpoint, s.st.SavedCheckpoint
	unchanged := s.saved && cp == saved
	pos := bus.Position{ID: cp, HasID: true, Seq: s.seq, HasSeq: s.hasSeq}
	s.mu.Unlock()
	if !ok || unchanged {
		return nil
	}
	if err := s.in.opts.Bus.SavePosition(ctx, s.id, pos); err != nil {
		return err
	}
	s.mu.Lock()
	if !s.saved || s.st.SavedCheckpoint < cp {
		s.st.SavedCheckpoint, s.saved = cp, true
	}
	s.mu.Unlock()
	if m := s.in.opts.Metrics; m != nil {
		m.CheckpointEventID.WithLabelValues(s.label).Set(float64(cp))
	}
	return nil
}

// resumeFrom returns where a fresh pipeline starts, nil for live.
func (s *shard) resumeFrom() *uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.HasCheckpoint {
		v := s.st.Checkpoint + 1
		return &v
	}
	if s.liveStart != nil {
		v := *s.liveStart
		return &v
	}
	if f := s.in.opts.FromID; f != nil {
		v := *f
		return &v
	}
	return nil
}

// pipeline is a shard's publishing state: the block tracker and the acker.
// It outlives subscriptions that end by a stream error or a stall, so the
// next one continues after the last event received, in the middle of a
// block if need be. A failed publish discards it: the next pipeline starts
// again from the checkpoint.
type pipeline struct {
	s  *shard
	a  *acker
	tr *tracker

	// stalled: the last subscription ended by the stall watchdog.
	stalled bool
	// scanned: the stream was read back from the checkpoint (readBack).
	scanned bool

	mu      sync.Mutex
	cancel  context.CancelCauseFunc // the current subscription's
	failErr error
}

func (s *shard) newPipeline() *pipeline {
	o := &s.in.opts
	p := &pipeline{s: s}
	p.a = &acker{s: s, fifo: make(chan pending, o.MaxInFlight+1), done: make(chan struct{}), abort: make(chan struct{}), fail: p.fail, nc: o.Bus.Conn()}
	go p.a.loop()
	p.tr = newTracker(s, p.a, s.resumeFrom())
	return p
}

func (p *pipeline) fail(err error) {
	p.mu.Lock()
	if p.failErr == nil {
		p.failErr = err
	}
	cancel := p.cancel
	p.mu.Unlock()
	if cancel != nil {
		cancel(err)
	}
}

func (p *pipeline) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failErr
}

// attach makes cancel the one a publish failure calls (nil: none).
func (p *pipeline) attach(cancel context.CancelCauseFunc) {
	p.mu.Lock()
	p.cancel = cancel
	err := p.failErr
	p.mu.Unlock()
	if err != nil && cancel != nil {
		cancel(err)
	}
}

// abandon stops a failed pipeline without waiting for its acks: they no
// longer move the checkpoint.
func (p *pipeline) abandon() {
	p.tr.reset()
	close(p.a.fifo)
	close(p.a.abort)
	<-p.a.done
}

// drain waits up to timeout for the pipeline's publishes to be acked.
func (p *pipeline) drain(timeout time.Duration) error {
	p.tr.reset()
	close(p.a.fifo)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.a.done:
		return nil
	case <-t.C:
	}
	n, _ := p.s.in.lim.inFlight()
	close(p.a.abort)
	<-p.a.done
	return fmt.Errorf("publishes still unacknowledged after %s (%d in flight)", timeout, n)
}

// readBack finds the shard's events stored in the stream after the
// checkpoint, which a crashed run or a failed pipeline published but did not
// checkpoint, so that this pipeline skips them instead of relying on the
// duplicate window. A shard without a position first records the stream's
// end, so that even a crash before its first checkpoint is covered.
func (p *pipeline) readBack(ctx context.Context) error {
	s := p.s
	b := s.in.opts.Bus
	s.mu.Lock()
	seq, hasSeq, hasID, cp := s.seq, s.hasSeq, s.st.HasCheckpoint, s.st.Checkpoint
	s.mu.Unlock()
	if !hasSeq {
		if hasID {
			// A checkpoint saved without a sequence: the duplicate
			// window covers this start, acks give the next ones.
			return nil
		}
		last, err := b.LastSequence(ctx)
		if err != nil {
			return fmt.Errorf("read the stream's end: %w", err)
		}
		pos := bus.Position{Seq: last, HasSeq: true}
		created, err := b.CreatePosition(ctx, s.id, pos)
		if err != nil {
			return err
		}
		if created {
			s.mu.Lock()
			s.seq, s.hasSeq = pos.Seq, true
			s.mu.Unlock()
			return nil
		}
		// Another instance saved a position since this one loaded
		// none: continue from that one.
		if pos, _, err = b.LoadPosition(ctx, s.id); err != nil {
			return err
		}
		s.mu.Lock()
		if pos.HasID && !s.st.HasCheckpoint {
			s.st.Checkpoint, s.st.HasCheckpoint, s.st.SavedCheckpoint = pos.ID, true, pos.ID
			s.saved = true
		}
		s.seq, s.hasSeq = pos.Seq, pos.HasSeq
		seq, hasSeq, hasID, cp = s.seq, s.hasSeq, s.st.HasCheckpoint, s.st.Checkpoint
		s.mu.Unlock()
		if !hasSeq {
			return nil
		}
	}
	stored, err := b.StoredAfter(ctx, s.id, seq)
	if err != nil {
		return err
	}
	a := p.a
	a.scanFrom = seq
	for id := range stored {
		if hasID && id <= cp {
			delete(stored, id)
			continue
		}
		a.storedMax = max(a.storedMax, id)
	}
	if len(stored) > 0 {
		a.stored = stored
		s.log.Info("ingest: events after the checkpoint are already in the stream, not publishing them again", "events", len(stored), "checkpoint", cp, "up_to", a.storedMax)
	}
	return nil
}

// session runs one subscription, feeding p, until it fails, stalls or ctx
// ends.
func (s *shard) session(ctx context.Context, p *pipeline) error {
	o := &s.in.opts
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.attach(cancel)
	defer p.attach(nil)
	if sctx.Err() != nil {
		return context.Cause(sctx)
	}

	if !p.scanned {
		if err := p.readBack(sctx); err != nil {
			return err
		}
		p.scanned = true
	}
	tr := p.tr
	if tr.needsSeed() {
		tr.seed(sctx)
	}
	if err := tr.resume(sctx, p.stalled); err != nil {
		return err
	}
	p.stalled = false
	from := tr.next()
	codec := &rawCodec{}
	req := &pb.SubscribeRequest{EventTypes: EventTypes, ShardIndex: &s.id, FromId: from}
	stream, err := o.Hub.Subscribe(sctx, req, codec.callOption())
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if from != nil {
		s.log.Debug("ingest: subscribed", "from_id", *from)
	} else {
		s.log.Debug("ingest: subscribed live")
	}

	// The watchdog only counts time spent waiting for the node: time
	// blocked on our own backpressure is not a stall.
	var waitingSince atomic.Int64
	go func() {
		t := time.NewTicker(max(o.StallTimeout/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-t.C:
				if w := waitingSince.Load(); w != 0 && now.UnixNano()-w > int64(o.StallTimeout) {
					cancel(errStalled)
					return
				}
			}
		}
	}()

	first := true
	for {
		waitingSince.Store(time.Now().UnixNano())
		msg, err := stream.Recv()
		waitingSince.Store(0)
		if err != nil {
			if cause := context.Cause(sctx); cause != nil {
				return cause
			}
			return fmt.Errorf("receive: %w", err)
		}
		e := codec.take(msg)
		s.received(e)
		if first {
			first = false
			if from != nil {
				if err := s.checkStart(sctx, tr, *from, e); err != nil {
					if cause := context.Cause(sctx); cause != nil {
						return cause
					}
					return err
				}
			}
		}
		if err := tr.add(sctx, e); err != nil {
			if cause := context.Cause(sctx); cause != nil {
				return cause
			}
			return err
		}
	}
}

func (s *shard) received(e *event) {
	now := time.Now()
	s.mu.Lock()
	s.st.Received++
	s.st.LastEventID, s.st.LastEventAt = e.id, now
	if !s.st.HasCheckpoint && s.liveStart == nil && s.in.opts.FromID == nil {
		id := e.id
		s.liveStart = &id
	}
	s.mu.Unlock()
	if m := s.in.opts.Metrics; m != nil {
		m.EventsReceived.WithLabelValues(s.label, typeName(e.typ)).Inc()
	}
}

// startReceive starts e's ingest.receive span, the root of the event's
// trace, unless it has one. The attributes are given at start so that the
// force sampler can match the FID and hash.
func (s *shard) startReceive(e *event) {
	if e.span != nil {
		return
	}
	attrs := append(s.attrs[:0], telemetry.Shard(s.id), telemetry.AttrEventID.Int64(int64(e.id)), telemetry.AttrEventType.String(typeName(e.typ)))
	if e.hasFID {
		attrs = append(attrs, telemetry.FID(e.fid))
	}
	if len(e.hashes) > 0 {
		attrs = append(attrs, telemetry.MessageHash(e.hashes[0]))
	}
	if e.msgType != 0 {
		attrs = append(attrs, telemetry.AttrMessageType.String(e.msgType.String()))
	}
	s.attrs = attrs
	e.spanCtx, e.span = s.in.tracer.Start(context.Background(), telemetry.SpanIngestReceive,
		trace.WithAttributes(attrs...), receiveKind)
}

var receiveKind = trace.WithSpanKind(trace.SpanKindConsumer)

// typeName is the event type as spans, metrics and message headers spell
// it: "MERGE_MESSAGE" for HUB_EVENT_TYPE_MERGE_MESSAGE.
func typeName(t pb.HubEventType) string {
	return strings.TrimPrefix(t.String(), "HUB_EVENT_TYPE_")
}

// endReceive ends e's receive span, if it has one.
func (e *event) endReceive() {
	if e.span != nil {
		e.span.End()
		e.span, e.spanCtx = nil, nil
	}
}

// checkStart looks at the first event of a subscription from from. It
// should be in from's block, or open the next block when from was
// mid-block; event ids are not dense (MERGE_FAILURE is not subscribed), so
// a larger id within the block is normal. A later start means the node
// either expired the events in between (retention: reported as a gap) or
// skipped them (fetched with GetEvents when few, reported otherwise).
func (s *shard) checkStart(ctx context.Context, tr *tracker, from uint64, first *event) error {
	if from == 0 || first.err != nil || first.id <= from {
		return nil
	}
	fb, b := blockOf(from), blockOf(first.id)
	if b == fb || (b == fb+1 && first.id == blockStart(b) && from != blockStart(fb)) {
		return nil
	}
	has, err := s.hasEvents(ctx, from, first.id)
	if err != nil || !has {
		g := Gap{Shard: s.id, Kind: GapRetention, FromID: from, ToID: first.id,
			Err: fmt.Errorf("asked for events from id %d, the node's first is %d", from, first.id)}
		if err != nil {
			g.Err = fmt.Errorf("%w (and checking with GetEvents failed: %v)", g.Err, err)
		}
		s.reportGap(ctx, g)
		tr.reset()
		return nil
	}
	if b-fb > uint64(s.in.opts.MaxRepairBlocks) {
		s.reportGap(ctx, Gap{Shard: s.id, Kind: GapSkipped, FromID: from, ToID: first.id,
			Err: fmt.Errorf("asked for events from id %d, the subscription started at %d although the node has events in between", from, first.id)})
		tr.reset()
		return nil
	}
	s.log.Warn("ingest: subscription started late; fetching the events before it", "from_id", from, "first_id", first.id)
	evs, err := s.fetchRange(ctx, from, first.id)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if err := tr.add(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// hasEvents reports whether the node stores any event in [start, stop).
func (s *shard) hasEvents(ctx context.Context, start, stop uint64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	one := uint32(1)
	codec := &rawCodec{}
	resp, err := s.in.opts.Hub.GetEvents(ctx, &pb.EventsRequest{StartId: start, ShardIndex: &s.id, StopId: &stop, PageSize: &one}, codec.callOption())
	if err != nil {
		return false, err
	}
	for _, e := range codec.takeEvents(resp) {
		if e.id >= start && e.id < stop {
			return true, nil
		}
	}
	return false, nil
}

// reportGap logs, counts and hands a gap to the gap handler.
func (s *shard) reportGap(ctx context.Context, g Gap) {
	s.mu.Lock()
	s.st.Gaps++
	s.mu.Unlock()
	if m := s.in.opts.Metrics; m != nil {
		m.GapsDetected.WithLabelValues(s.label).Inc()
	}
	attrs := []any{"kind", g.Kind.String(), "from_id", g.FromID, "to_id", g.ToID}
	if len(g.Missing) > 0 {
		attrs = append(attrs, "missing", fmt.Sprint(g.Missing))
	}
	if len(g.FIDs) > 0 {
		attrs = append(attrs, "fids", g.FIDs)
	}
	if g.Err != nil {
		attrs = append(attrs, "err", g.Err)
	}
	s.log.Error("ingest: gap in the event stream", attrs...)
	if h := s.in.opts.GapHandler; h != nil {
		if err := h.HandleGap(context.WithoutCancel(ctx), g); err != nil {
			s.log.Error("ingest: gap handler failed", "kind", g.Kind.String(), "from_id", g.FromID, "err", err)
		}
	}
}

// publish sends e unless an earlier session already had it acknowledged.
// The message carries the context of the event's ingest.publish span,
// which lasts until the server acknowledges it.
func (s *shard) publish(ctx context.Context, a *acker, e *event) error {
	if cp, ok := s.checkpoint(); ok && e.id <= cp {
		e.endReceive()
		return nil
	}
	if seq, ok := a.stored[e.id]; ok {
		e.endReceive()
		if err := s.in.lim.acquire(ctx, 0); err != nil {
			return err
		}
		a.fifo <- pending{id: e.id, seq: seq}
		return nil
	}
	lim := s.in.lim
	if e.err != nil {
		s.reportGap(ctx, Gap{Shard: s.id, Kind: GapUnpublishable, FromID: e.id, ToID: e.id + 1,
			Err: fmt.Errorf("event bytes do not parse: %w", e.err)})
		return a.skip(ctx, e.id)
	}
	// Events fetched to repair a block were not received on the stream;
	// their trace starts here.
	s.startReceive(e)
	msg := bus.NewMsg(e.busEvent(s.id), s.in.opts.Bus.Partitions())
	size := len(e.data)
	if err := lim.acquire(ctx, size); err != nil {
		return err
	}
	pctx, span := s.in.tracer.Start(e.spanCtx, telemetry.SpanIngestPublish, publishKind)
	if span.SpanContext().IsValid() {
		s.in.opts.Propagator.Inject(pctx, bus.HeaderCarrier(msg.Header))
	}
	start := time.Now()
	fut, err := s.in.opts.Bus.PublishAsync(msg)
	if err != nil {
		lim.release(size)
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		span.End()
		if errors.Is(err, nats.ErrMaxPayload) {
			e.endReceive()
			g := Gap{Shard: s.id, Kind: GapUnpublishable, FromID: e.id, ToID: e.id + 1, Err: err}
			if e.hasFID {
				g.FIDs = []uint64{e.fid}
			}
			s.reportGap(ctx, g)
			return a.skip(ctx, e.id)
		}
		return err
	}
	e.endReceive()
	a.fifo <- pending{fut: fut, id: e.id, size: size, typ: e.typ, span: span, start: start}
	return nil
}

var publishKind = trace.WithSpanKind(trace.SpanKindProducer)

// pending is a publish awaiting its ack, in publish order.
type pending struct {
	fut jetstream.PubAckFuture // nil: nothing published (a reported gap, or seq set)
	id  uint64
	// seq is the stream sequence of an event found already stored.
	seq  uint64
	size int
	typ  pb.HubEventType
	// span is the publish span, ended with the ack; start is when the
	// publish was sent.
	span  trace.Span
	start time.Time
}

// acker resolves a session's publishes in order and advances the
// checkpoint past each acknowledged one, until the first failure.
type acker struct {
	s     *shard
	fifo  chan pending
	done  chan struct{}
	abort chan struct{}
	fail  context.CancelCauseFunc
	nc    *nats.Conn

	// stored holds the events readBack found in the stream after
	// scanFrom, by id, with their sequences; storedMax is the highest id.
	// Until the checkpoint passes storedMax it keeps scanFrom as its
	// sequence: those events may sit below the sequences of acks.
	stored    map[uint64]uint64
	storedMax uint64
	scanFrom  uint64
}

// skip queues a placeholder so the checkpoint passes an event that was
// reported as a gap once everything before it is acknowledged.
func (a *acker) skip(ctx context.Context, id uint64) error {
	if err := a.s.in.lim.acquire(ctx, 0); err != nil {
		return err
	}
	a.fifo <- pending{id: id}
	return nil
}

func (a *acker) loop() {
	defer close(a.done)
	// A closed connection never resolves its pending futures before their
	// timeout; polling IsClosed notices it sooner.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	failed := false
	for p := range a.fifo {
		var ack *jetstream.PubAck
		var err error
		if p.fut != nil {
			okc, errc := p.fut.Ok(), p.fut.Err()
		wait:
			for {
				select {
				case ack = <-okc:
					break wait
				case err = <-errc:
					break wait
				case <-a.abort:
					err = errAbandoned
					break wait
				case <-tick.C:
					if a.nc.IsClosed() {
						err = nats.ErrConnectionClosed
						break wait
					}
				}
			}
		}
		a.s.in.lim.release(p.size)
		if p.span != nil {
			if err != nil {
				p.span.RecordError(err)
				p.span.SetStatus(codes.Error, "not acknowledged")
			}
			p.span.End()
		}
		if failed {
			continue
		}
		if err != nil {
			failed = true
			a.fail(fmt.Errorf("publish event %d: %w", p.id, err))
			continue
		}
		if m := a.s.in.opts.Metrics; m != nil && p.fut != nil {
			m.PublishLatency.Observe(time.Since(p.start).Seconds())
			m.EventsPublished.WithLabelValues(a.s.label, typeName(p.typ)).Inc()
		}
		seq, hasSeq := p.seq, p.seq != 0
		if ack != nil {
			seq, hasSeq = ack.Sequence, true
		}
		if a.stored != nil && p.id < a.storedMax {
			seq, hasSeq = a.scanFrom, true
		}
		a.s.acked(p.id, ack, p.seq != 0, seq, hasSeq)
	}
}

// acked moves the checkpoint to id. stored: the event was found in the
// stream, not published. seq, when hasSeq, is the stream sequence to read
// back from should a later run resume at this checkpoint.
func (s *shard) acked(id uint64, ack *jetstream.PubAck, stored bool, seq uint64, hasSeq bool) {
	s.mu.Lock()
	s.st.Checkpoint, s.st.HasCheckpoint = id, true
	if hasSeq {
		s.seq, s.hasSeq = seq, true
	}
	switch {
	case ack != nil:
		s.st.Published++
		if ack.Duplicate {
			s.st.Duplicates++
		}
	case stored:
		s.st.Published++
		s.st.Duplicates++
	}
	s.mu.Unlock()
}

// fetchRange returns the shard's subscribed events with ids in
// [start, stop), read with GetEvents.
func (s *shard) fetchRange(ctx context.Context, start, stop uint64) ([]*event, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o := &s.in.opts
	ps := uint32(o.RepairPageSize)
	var out []*event
	var token []byte
	for page := 0; ; page++ {
		codec := &rawCodec{}
		req := &pb.EventsRequest{StartId: start, ShardIndex: &s.id, StopId: &stop, PageSize: &ps, PageToken: token}
		resp, err := o.Hub.GetEvents(ctx, req, codec.callOption())
		if err != nil {
			return nil, fmt.Errorf("get events %d..%d: %w", start, stop, err)
		}
		evs := codec.takeEvents(resp)
		for _, e := range evs {
			if e.id >= start && e.id < stop && subscribed(e.typ) {
				out = append(out, e)
			}
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 || len(evs) == 0 {
			break
		}
		if page > 1<<16 {
			return nil, fmt.Errorf("get events %d..%d: paging does not end", start, stop)
		}
	}
	slices.SortFunc(out, func(a, b *event) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return slices.CompactFunc(out, func(a, b *event) bool { return a.id == b.id }), nil
}

// backoff is capped exponential backoff with jitter: each wait is drawn
// from [d/2, d] so reconnecting shards and processes spread out.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{min: lo, max: hi, cur: lo} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	half := d / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = b.min }

// sleep waits d or until ctx ends, reporting whether the full wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
