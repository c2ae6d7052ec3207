package ingest

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// maxType bounds the event type numbers counted per block.
const maxType = 32

var subscribedTypes = func() (s [maxType]bool) {
	for _, t := range EventTypes {
		s[t] = true
	}
	return s
}()

func subscribed(t pb.HubEventType) bool { return t >= 0 && t < maxType && subscribedTypes[t] }

// tracker checks a session's events block by block against each block's
// BLOCK_CONFIRMED counts. Events of a block whose counts are known are held
// until the block is complete, then published in order; an incomplete
// block is repaired from GetEvents when the next block starts.
type tracker struct {
	s *shard
	a *acker
	// cur is the block being received.
	cur *block
	// follow is set once a block was seen to its end (or the session
	// starts at a block boundary): the next block must then be the
	// following one and start with its BLOCK_CONFIRMED.
	follow   bool
	lastID   uint64
	haveLast bool
	// start is the pipeline's first from_id (nil: live). Events below
	// floor were published before and are ignored (see seed).
	start  *uint64
	floor  uint64
	seeded bool
}

type block struct {
	num uint64
	// verify: the block is checked against its counts. It is false for a
	// block the session joined in the middle, whose earlier events it
	// cannot see.
	verify   bool
	confirm  bool
	want     [maxType]uint64
	have     [maxType]uint64
	buf      []*event
	released bool
	// floor: events below it were published by an earlier session and
	// are counted in have (see tracker.seed).
	floor uint64
	span  trace.Span
}

func newTracker(s *shard, a *acker, from *uint64) *tracker {
	t := &tracker{s: s, a: a, start: from}
	if from != nil {
		t.floor = *from
		if *from != 0 && *from%(1<<seqBits) == 0 {
			t.follow = true
		}
	}
	return t
}

// next returns the from_id of the next subscription: right after the last
// event received, or the pipeline's start.
func (t *tracker) next() *uint64 {
	if t.haveLast {
		v := max(t.lastID+1, t.floor)
		return &v
	}
	return t.start
}

// reset forgets the block in progress and what the tracker expects next;
// used when the stream is known to have jumped (expired events) and when
// the pipeline ends. Held events are dropped: nothing of them was
// published, so the checkpoint is still before them.
func (t *tracker) reset() {
	if t.cur != nil {
		t.cur.end()
	}
	t.cur, t.follow = nil, false
}

func (t *tracker) needsSeed() bool {
	return !t.seeded && !t.haveLast && t.start != nil && *t.start%(1<<seqBits) != 0
}

// seed prepares the block of a mid-block start: the events of that block
// before it were published by an earlier run, and counting them lets the
// rest of the block be verified. Failing that, the block is published
// unverified.
func (t *tracker) seed(ctx context.Context) {
	t.seeded = true
	from := *t.start
	num := blockOf(from)
	evs, err := t.s.fetchRange(ctx, blockStart(num), from)
	if err != nil {
		t.s.log.Debug("ingest: cannot read the start of the resumed block; publishing it unverified", "block", num, "err", err)
		return
	}
	b := t.newBlock(num, false)
	b.floor = from
	for _, e := range evs {
		if e.err == nil {
			b.count(e)
		}
	}
	if !b.confirm {
		b.end()
		return
	}
	b.verify = true
	b.released = b.complete()
	t.cur = b
}

var spanKind = trace.WithSpanKind(trace.SpanKindProducer)

func (t *tracker) newBlock(num uint64, verify bool) *block {
	b := &block{num: num, verify: verify}
	_, span := t.s.in.tracer.Start(context.Background(), "ingest.block", spanKind)
	if span.IsRecording() {
		span.SetAttributes(telemetry.Shard(t.s.id), attribute.Int64("farcaster.block", int64(num)))
	}
	b.span = span
	return b
}

// end closes the block's span and the receive spans of events it still
// holds, which are dropped with it (see tracker.reset).
func (b *block) end() {
	if b.span != nil {
		b.span.End()
		b.span = nil
	}
	for _, e := range b.buf {
		e.endReceive()
	}
}

func (b *block) count(e *event) {
	if e.typ == pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED && e.confirm != nil && !b.confirm {
		b.confirm = true
		for t, n := range e.confirm.byType {
			if subscribedTypes[t] {
				b.want[t] = n
			}
		}
	}
	if e.typ >= 0 && e.typ < maxType {
		b.have[e.typ]++
	}
}

func (b *block) uncount(e *event) {
	if e.typ >= 0 && e.typ < maxType && b.have[e.typ] > 0 {
		b.have[e.typ]--
	}
}

func (b *block) complete() bool {
	if !b.confirm {
		return false
	}
	for t := range maxType {
		if b.have[t] < b.want[t] {
			return false
		}
	}
	return true
}

func (b *block) missing() map[pb.HubEventType]uint64 {
	m := map[pb.HubEventType]uint64{}
	for t := range maxType {
		if b.have[t] < b.want[t] {
			m[pb.HubEventType(t)] = b.want[t] - b.have[t]
		}
	}
	return m
}

func (t *tracker) add(ctx context.Context, e *event) error {
	s := t.s
	parsed := e.err == nil
	if parsed {
		switch {
		case e.block != 0 && e.block != blockOf(e.id):
			e.err = fmt.Errorf("event id %d is not in its block_number %d", e.id, e.block)
		case e.shard != 0 && e.shard != s.id:
			e.err = fmt.Errorf("event %d says shard %d", e.id, e.shard)
		}
	}
	if e.err != nil {
		// Its id cannot be trusted to place it, so it moves nothing; but
		// it did arrive, and counts towards the block it arrived in when
		// the node could read its type too.
		if b := t.cur; parsed && b != nil && e.typ >= 0 && e.typ < maxType {
			b.have[e.typ]++
		}
		s.reportGap(ctx, Gap{Shard: s.id, Kind: GapUnpublishable, FromID: t.lastID + 1, ToID: t.lastID + 2,
			Err: fmt.Errorf("malformed event (id read as %d, %d bytes): %w", e.id, len(e.data), e.err)})
		if b := t.cur; b != nil && b.verify && !b.released && b.complete() {
			return t.release(ctx, b)
		}
		return nil
	}
	if e.id < t.floor {
		return nil
	}
	if t.haveLast && e.id <= t.lastID {
		s.log.Debug("ingest: event id not above the previous one; dropped as a repeat", "id", e.id, "previous", t.lastID)
		return nil
	}
	num := blockOf(e.id)
	if t.cur == nil || num != t.cur.num {
		if t.cur != nil {
			prev := t.cur.num
			if err := t.finish(ctx, t.cur); err != nil {
				return err
			}
			t.follow = true
			if num > prev+1 {
				if err := t.fill(ctx, prev+1, num); err != nil {
					return err
				}
			}
		}
		isConfirm := e.typ == pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED && e.id == blockStart(num)
		t.cur = t.newBlock(num, t.follow || isConfirm)
	}
	// From here on the event is the tracker's: published, or held in its
	// block. Until then an error leaves it to be received again.
	b := t.cur
	s.startReceive(e)
	b.count(e)
	t.lastID, t.haveLast = e.id, true
	if !b.verify || b.released {
		if err := t.s.publish(ctx, t.a, e); err != nil {
			b.uncount(e)
			t.lastID = e.id - 1
			return err
		}
		return nil
	}
	b.buf = append(b.buf, e)
	if b.complete() {
		return t.release(ctx, b)
	}
	return nil
}

// resume is called when a subscription starts: a held block that is
// complete (its release was cut short) is released; an incomplete one is
// repaired first when the stream went quiet with it held (stalled), since
// the rest of it may never come.
func (t *tracker) resume(ctx context.Context, afterStall bool) error {
	b := t.cur
	if b == nil || !b.verify || b.released {
		return nil
	}
	if !b.complete() {
		if !afterStall {
			return nil
		}
		if err := t.repair(ctx, b); err != nil {
			return err
		}
	}
	return t.release(ctx, b)
}

func (t *tracker) release(ctx context.Context, b *block) error {
	for i, e := range b.buf {
		if err := t.s.publish(ctx, t.a, e); err != nil {
			b.buf = b.buf[i:]
			return err
		}
	}
	b.buf, b.released = nil, true
	return nil
}

// finish closes a block when the next one starts: an incomplete block is
// repaired, then published.
func (t *tracker) finish(ctx context.Context, b *block) error {
	defer b.end()
	if !b.verify || b.released {
		return nil
	}
	if err := t.repair(ctx, b); err != nil {
		return err
	}
	return t.release(ctx, b)
}

// repair adds the block's missing events from GetEvents. A failed fetch
// ends the session (the block is replayed by the next one) until it has
// failed three times for the same block; then, as when the node's own
// answer is still short, the gap is reported and the block published as
// it is.
func (t *tracker) repair(ctx context.Context, b *block) error {
	s := t.s
	fetched, err := s.fetchRange(ctx, blockStart(b.num), blockStart(b.num+1))
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if s.repairBlock != b.num {
			s.repairBlock, s.repairFails = b.num, 0
		}
		s.repairFails++
		if s.repairFails < 3 {
			return fmt.Errorf("repair block %d: %w", b.num, err)
		}
		s.reportGap(ctx, Gap{Shard: s.id, Kind: GapMissingEvents, FromID: blockStart(b.num), ToID: blockStart(b.num + 1), Missing: b.missing(), Err: err})
		return nil
	}
	have := make(map[uint64]bool, len(b.buf))
	for _, e := range b.buf {
		have[e.id] = true
	}
	added := 0
	merged := make([]*event, 0, len(b.buf)+len(fetched))
	i := 0
	for _, f := range fetched {
		for i < len(b.buf) && b.buf[i].id < f.id {
			merged = append(merged, b.buf[i])
			i++
		}
		if have[f.id] || f.id < b.floor {
			continue
		}
		b.count(f)
		merged = append(merged, f)
		added++
	}
	merged = append(merged, b.buf[i:]...)
	b.buf = merged
	if n := len(merged); n > 0 && merged[n-1].id > t.lastID {
		// A replay must not deliver the fetched events again.
		t.lastID, t.haveLast = merged[n-1].id, true
	}
	s.mu.Lock()
	s.st.Repaired += uint64(added)
	s.mu.Unlock()
	if b.complete() {
		if m := s.in.opts.Metrics; m != nil && added > 0 {
			m.GapsRepaired.WithLabelValues(s.label).Inc()
		}
		s.log.Info("ingest: repaired block from GetEvents", "block", b.num, "events", added)
		return nil
	}
	s.reportGap(ctx, Gap{Shard: s.id, Kind: GapMissingEvents, FromID: blockStart(b.num), ToID: blockStart(b.num + 1), Missing: b.missing(),
		Err: fmt.Errorf("block %d is short of events after GetEvents (confirmation seen: %v)", b.num, b.confirm)})
	return nil
}

// fill fetches whole blocks [from, to) that the subscription skipped.
func (t *tracker) fill(ctx context.Context, from, to uint64) error {
	s := t.s
	if to-from > uint64(s.in.opts.MaxRepairBlocks) {
		return &skippedError{from: from, to: to}
	}
	s.log.Warn("ingest: subscription skipped blocks; fetching them", "from_block", from, "to_block", to-1)
	for num := from; num < to; num++ {
		b := t.newBlock(num, true)
		if err := t.finish(ctx, b); err != nil {
			return err
		}
		t.cur = b
	}
	return nil
}
