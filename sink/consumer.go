package sink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/bus"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// maxWriteAttempts is how often a batch is retried whole while the database
// answers pings; after that its events are written one by one and those
// that still fail are dead-lettered, so one bad event cannot stall a
// partition.
const maxWriteAttempts = 5

// replica is one member of the group: it owns the partitions rendezvous
// hashing gives it and writes through its own Writer, one batch at a time.
// A worker per owned partition pulls chunks of that partition; the
// replica's batcher writes chunks of several partitions in one transaction,
// so transactions stay large when traffic is spread over many partitions.
type replica struct {
	s      *Sink
	id     string
	js     jetstream.JetStream
	stream jetstream.Stream
	w      *Writer
	chunks chan *chunk
	// abandon ends ShutdownTimeout after the replica was told to stop:
	// chunks not acknowledged by then are left to be redelivered.
	abandon context.Context
	log     *slog.Logger
}

// chunk is what one pull of one partition returned. Its worker pulls again
// only after done is closed, when the chunk was acknowledged (or abandoned
// at shutdown), so a partition never has two chunks in flight and its
// chunks are written in stream order.
type chunk struct {
	p     int
	msgs  []jetstream.Msg
	bytes int
	done  chan struct{}
}

func newReplicaID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runReplica runs one replica on js until ctx is done.
func (s *Sink) runReplica(ctx context.Context, js jetstream.JetStream, id string) error {
	if id == "" {
		id = newReplicaID()
	}
	r := &replica{s: s, id: id, js: js, chunks: make(chan *chunk)}
	r.log = s.log.With("replica", r.id)
	var kv jetstream.KeyValue
	err := retry(ctx, r.log, "start replica", func() error {
		var err error
		if r.w == nil {
			opts := append([]WriterOption{WithLogger(r.log)}, s.opts.WriterOptions...)
			if r.w, err = NewWriter(ctx, s.opts.Pool, opts...); err != nil {
				return err
			}
		}
		if r.stream == nil {
			if r.stream, err = js.Stream(ctx, s.opts.Bus.StreamName()); err != nil {
				return err
			}
		}
		kv, err = js.KeyValue(ctx, s.opts.MemberBucket)
		return err
	})
	if err != nil {
		return nil //nolint:nilerr // ctx is done: a normal stop
	}
	s.replicas.Add(1)
	defer s.replicas.Add(-1)
	r.run(ctx, kv)
	return nil
}

// retry calls f until it succeeds or ctx is done, backing off up to 5s.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("sink: "+what+" failed, retrying", "err", err, "in", delay)
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type worker struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *replica) run(ctx context.Context, kv jetstream.KeyValue) {
	o := r.s.opts
	key := o.Group + "." + r.id
	heartbeat := func() {
		hctx, cancel := context.WithTimeout(ctx, o.MemberTTL/2)
		defer cancel()
		if _, err := kv.Put(hctx, key, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil && ctx.Err() == nil {
			r.log.Warn("sink: member heartbeat failed", "err", err)
		}
	}
	heartbeat()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = kv.Delete(dctx, key)
	}()

	seen := map[string]time.Time{}
	var updates <-chan jetstream.KeyValueEntry
	var watcher jetstream.KeyWatcher
	ready := false
	watch := func() {
		w, err := kv.Watch(ctx, o.Group+".*")
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("sink: watch members failed", "err", err)
			}
			return
		}
		watcher, updates, ready = w, w.Updates(), false
	}
	watch()
	defer func() {
		if watcher != nil {
			_ = watcher.Stop()
		}
	}()

	abandon, stopAbandon := context.WithCancel(context.WithoutCancel(ctx))
	r.abandon = abandon
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(o.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			stopAbandon()
		case <-abandon.Done():
		}
	})
	// The batcher outlives the workers: a stopping worker still hands over
	// the chunk it pulled and waits for its acknowledgement, so a partition
	// moves on only after everything it was given is written.
	workersDone, batcherDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(batcherDone)
		r.batcher(ctx, workersDone)
	}()
	workers := map[int]*worker{}
	stopping := map[int]*worker{}
	defer func() {
		for _, w := range workers {
			w.cancel()
		}
		for _, w := range workers {
			<-w.done
		}
		for _, w := range stopping {
			<-w.done
		}
		close(workersDone)
		<-batcherDone
		stop()
		stopAbandon()
	}()

	tick := time.NewTicker(o.MemberTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-updates:
			if !ok {
				updates, watcher = nil, nil
				continue
			}
			if e == nil {
				ready = true
				break
			}
			id := e.Key()[len(o.Group)+1:]
			switch e.Operation() {
			case jetstream.KeyValuePut:
				at := time.Now()
				if !ready {
					at = e.Created()
				}
				seen[id] = at
			default:
				delete(seen, id)
			}
		case <-tick.C:
			heartbeat()
			if updates == nil {
				watch()
			}
		}
		if !ready {
			continue
		}
		live := []string{r.id}
		now := time.Now()
		for id, at := range seen {
			if id != r.id && now.Sub(at) < o.MemberTTL {
				live = append(live, id)
			}
		}
		for p := range r.s.opts.Bus.Partitions() {
			mine := owner(live, p) == r.id
			w, running := workers[p]
			switch {
			case mine && (!running || isDone(w)):
				workers[p] = r.start(ctx, p, stopping[p])
				delete(stopping, p)
			case !mine && running:
				w.cancel()
				delete(workers, p)
				stopping[p] = w
			}
			if w, ok := stopping[p]; ok && isDone(w) {
				delete(stopping, p)
			}
		}
	}
}

func isDone(w *worker) bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// owner returns the member rendezvous hashing assigns partition p.
func owner(members []string, p int) string {
	var best string
	var bestScore uint64
	for _, m := range members {
		h := fnv.New64a()
		h.Write([]byte(m))
		h.Write([]byte{':'})
		h.Write(strconv.AppendInt(nil, int64(p), 10))
		// fnv's last bytes barely mix into its high bits; a finaliser
		// spreads the partitions evenly among members.
		score := mix64(h.Sum64())
		if best == "" || score > bestScore || (score == bestScore && m < best) {
			best, bestScore = m, score
		}
	}
	return best
}

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// start runs a worker for partition p once prev, the replica's previous
// worker for p still finishing its batch, has stopped.
func (r *replica) start(ctx context.Context, p int, prev *worker) *worker {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if prev != nil {
			select {
			case <-prev.done:
			case <-wctx.Done():
				return
			}
		}
		r.s.held.Add(1)
		defer r.s.held.Add(-1)
		r.consume(wctx, p)
	}()
	return w
}

// batch holds the replica's reusable buffers for the chunks it writes
// together.
type batch struct {
	chunks  []*chunk
	parts   []PartitionSeqs
	msgs    []jetstream.Msg
	seqs    []uint64
	keys    []string
	seen    []bool
	events  []*pb.HubEvent
	evKeys  []string
	poisons []poison
	// spans are the messages' sink.process spans; links point the batch's
	// commit span at the sampled ones.
	spans []trace.Span
	links []trace.Link

	// Set by prepare for commit.
	partitions []int
	log        *slog.Logger
	dups       int
	// finished stops the goroutine (bg) that keeps the batch's messages in
	// progress from prepare until commit is done with them.
	finished chan struct{}
	bg       sync.WaitGroup
}

func (r *replica) consume(ctx context.Context, p int) {
	o := r.s.opts
	name := bus.ConsumerName(o.Group, p)
	var cons jetstream.Consumer
	if retry(ctx, r.log, "open consumer "+name, func() error {
		var err error
		cons, err = r.js.Consumer(ctx, o.Bus.StreamName(), name)
		return err
	}) != nil {
		return
	}
	log := r.log.With("partition", p)
	pulled := false
	defer func() {
		if !pulled {
			return
		}
		// Hand the partition on at once instead of after PinnedTTL.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := r.stream.UnpinConsumer(uctx, name, o.Group); err != nil {
			log.Debug("sink: unpin failed", "err", err)
		}
	}()
	var msgs []jetstream.Msg
	backoff := 50 * time.Millisecond
	single := false
	// After a full pull there is likely more waiting: the next pull ends
	// backlogWait after it, rather than BatchTimeout, since the server
	// ends it only by expiry (see below) and the partition would otherwise
	// idle that long between pulls while it drains a backlog.
	backlogWait := min(o.BatchTimeout, 10*time.Millisecond)
	full := false
	for ctx.Err() == nil {
		wait := o.BatchTimeout
		if full {
			wait = backlogWait
		}
		fopts := []jetstream.FetchOpt{jetstream.FetchMaxWait(wait), jetstream.FetchPriorityGroup(o.Group)}
		// One more than MaxAckPending: the server can never fill the
		// request by count, so it ends by expiry (or by bytes). A
		// replicated consumer sends a request's "409 Batch Completed"
		// status before the deliveries still waiting on replication, and
		// the fetch, which stops at that status, would drop them; after a
		// leader change the redelivered batch fills the request exactly
		// every time, so the partition would stall for good. Expiry
		// statuses wait for those deliveries.
		n := o.PullSize + 1
		if single {
			// The last pull came back empty, which is also how a pull
			// whose byte limit is below the next message's size ends (the
			// client hides that status): pull one message with no byte
			// limit, which no status ends early either.
			n = 1
		} else {
			fopts = append(fopts, jetstream.FetchMaxBytes(r.pullBytes()))
		}
		mb, err := cons.Fetch(n, fopts...)
		if err != nil {
			log.Debug("sink: fetch failed", "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		msgs = msgs[:0]
		size := 0
		for m := range mb.Messages() {
			msgs = append(msgs, m)
			size += len(m.Data())
		}
		if len(msgs) == 0 {
			switch err := mb.Error(); {
			case err == nil || errors.Is(err, jetstream.ErrMaxBytesExceeded):
				single = !single
			case !errors.Is(err, jetstream.ErrPinIDMismatch):
				log.Debug("sink: fetch failed", "err", err)
				sleep(ctx, backoff)
				backoff = min(2*backoff, 2*time.Second)
			}
			continue
		}
		full = len(msgs) >= o.PullSize || (!single && size+size/len(msgs) > r.pullBytes())
		backoff, single = 50*time.Millisecond, false
		pulled = true
		r.handOver(&chunk{p: p, msgs: msgs, bytes: size, done: make(chan struct{})})
		clear(msgs)
	}
}

// pullBytes is the byte limit of one pull: the process's MaxPulledBytes
// shared among the partitions it holds, at most MaxBatchBytes.
func (r *replica) pullBytes() int {
	o := r.s.opts
	return int(min(int64(o.MaxBatchBytes), int64(o.MaxPulledBytes)/max(r.s.held.Load(), 1)))
}

// handOver gives c to the batcher and waits until it was acknowledged,
// keeping it in progress while the batcher is busy with other chunks.
func (r *replica) handOver(c *chunk) {
	t := time.NewTicker(r.s.opts.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case r.chunks <- c:
			// The batcher finishes or abandons every chunk it took.
			<-c.done
			return
		case <-t.C:
			for _, m := range c.msgs {
				_ = m.InProgress()
			}
		case <-r.abandon.Done():
			// Hand the chunk to the next owner now rather than after
			// AckWait.
			nakAll(c.msgs)
			return
		}
	}
}

func nakAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// batcher writes the chunks the replica's workers pull, several at a time,
// until workersDone is closed or the replica abandons its work. It gathers
// and prepares (dedupe lookup, decoding, validation) the next batch while
// the previous one is being written: a partition has one chunk in flight,
// so the two batches never hold messages of the same partition, and each
// partition's messages are still written in stream order.
func (r *replica) batcher(ctx context.Context, workersDone <-chan struct{}) {
	o := r.s.opts
	// Partitions pulled at the same moment answer at about the same
	// moment, BatchTimeout later; a short wait after the first chunk
	// gathers the others into the same transaction.
	linger := o.BatchTimeout / 5
	free := make(chan *batch, 2)
	free <- &batch{}
	free <- &batch{}
	prepared := make(chan *batch)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for b := range prepared {
			r.commit(ctx, b)
			for _, c := range b.chunks {
				close(c.done)
			}
			clear(b.chunks)
			clear(b.msgs)
			clear(b.events)
			free <- b
		}
	}()
	defer func() {
		close(prepared)
		<-writerDone
	}()
	var carry *chunk
	for {
		c := carry
		carry = nil
		if c != nil && r.abandon.Err() != nil {
			nakAll(c.msgs)
			close(c.done)
			return
		}
		if c == nil {
			select {
			case c = <-r.chunks:
			case <-workersDone:
				return
			case <-r.abandon.Done():
				return
			}
		}
		b := <-free
		b.chunks = append(b.chunks[:0], c)
		n, size := len(c.msgs), c.bytes
		t := time.NewTimer(linger)
	gather:
		for n < o.BatchSize && size < o.MaxBatchBytes {
			select {
			case c := <-r.chunks:
				if n+len(c.msgs) > o.BatchSize || size+c.bytes > o.MaxBatchBytes {
					carry = c
					break gather
				}
				b.chunks = append(b.chunks, c)
				n, size = n+len(c.msgs), size+c.bytes
			case <-t.C:
				break gather
			}
		}
		t.Stop()
		r.prepare(b)
		prepared <- b
	}
}

// prepare readies the chunks of b for commit: it keeps their messages in
// progress until commit is done, skips what the dedupe cache says is
// stored, and decodes and validates the rest, setting aside poison.
func (r *replica) prepare(b *batch) {
	o := r.s.opts
	b.msgs, b.parts, b.partitions = b.msgs[:0], b.parts[:0], b.partitions[:0]
	for _, c := range b.chunks {
		b.msgs = append(b.msgs, c.msgs...)
		b.parts = append(b.parts, PartitionSeqs{Partition: c.p})
		b.partitions = append(b.partitions, c.p)
	}
	b.log = r.log.With("partitions", slices.Clone(b.partitions))
	wctx := r.abandon
	b.finished = make(chan struct{})
	b.bg.Go(func() {
		t := time.NewTicker(o.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-b.finished:
				return
			case <-t.C:
				for _, m := range b.msgs {
					_ = m.InProgress()
				}
			}
		}
	})

	n := len(b.msgs)
	b.seqs = slices.Grow(b.seqs[:0], n)[:n]
	b.keys = slices.Grow(b.keys[:0], n)[:n]
	b.seen = slices.Grow(b.seen[:0], n)[:n]
	b.spans = slices.Grow(b.spans[:0], n)[:n]
	b.events, b.evKeys, b.poisons, b.links = b.events[:0], b.evKeys[:0], b.poisons[:0], b.links[:0]
	met := o.Metrics
	i := 0
	for _, c := range b.chunks {
		pending := int64(-1)
		for _, m := range c.msgs {
			b.seqs[i] = 0
			if md, err := m.Metadata(); err == nil {
				b.seqs[i] = md.Sequence.Stream
				pending = int64(md.NumPending)
			}
			i++
		}
		if met != nil && pending >= 0 {
			met.JetStreamPending.WithLabelValues(bus.ConsumerName(o.Group, c.p)).Set(float64(pending))
		}
	}
	for i, m := range b.msgs {
		b.spans[i] = r.startProcess(m)
		if sc := b.spans[i].SpanContext(); sc.IsSampled() {
			b.links = append(b.links, trace.Link{SpanContext: sc})
		}
		b.keys[i] = ""
		if r.s.dedup != nil {
			h := m.Headers()
			if typ, hs := h.Get(bus.HeaderEventType), h.Values(bus.HeaderHash); typ != "" && len(hs) > 0 && hs[0] != "" {
				b.keys[i] = dedupeMember(typ, hs[0])
			}
		}
	}
	r.s.dedup.seenOrNone(wctx, b.keys, b.seen)
	b.dups = 0
	for i, m := range b.msgs {
		span := b.spans[i]
		if b.seen[i] {
			b.dups++
			span.SetAttributes(attrDuplicate)
			span.End()
			continue
		}
		ev := &pb.HubEvent{}
		if err := proto.Unmarshal(m.Data(), ev); err != nil {
			b.poisons = append(b.poisons, newPoison(m, b.seqs[i], ReasonUndecodable, err.Error(), nil))
			span.SetStatus(codes.Error, ReasonUndecodable)
			span.End()
			continue
		}
		if reason, detail, hash := validateEvent(ev, o.Validate, o.Network); reason != "" {
			b.poisons = append(b.poisons, newPoison(m, b.seqs[i], reason, detail, hash))
			span.SetStatus(codes.Error, reason)
			span.End()
			continue
		}
		b.events = append(b.events, ev)
		b.evKeys = append(b.evKeys, b.keys[i])
		span.End()
	}
	clear(b.spans)
}

// commit stores the prepared batch b in one transaction and acknowledges
// its messages, or abandons them unacknowledged when ctx is done and
// ShutdownTimeout has passed.
func (r *replica) commit(ctx context.Context, b *batch) {
	defer func() {
		close(b.finished)
		b.bg.Wait()
	}()
	if r.abandon.Err() != nil {
		// Abandoned before its write started: hand the messages on now
		// rather than after AckWait.
		nakAll(b.msgs)
		return
	}
	o := r.s.opts
	wctx, log, n, met := r.abandon, b.log, len(b.msgs), o.Metrics
	cctx, commit := r.s.tracer.Start(wctx, telemetry.SpanSinkCommit, trace.WithLinks(b.links...),
		trace.WithAttributes(attribute.Int("waypoint.batch.messages", n), attribute.IntSlice("waypoint.partitions", b.partitions)))
	clear(b.links)
	b.links = b.links[:0]
	start := time.Now()
	res, ok := r.write(ctx, cctx, log, b)
	if !ok {
		commit.SetStatus(codes.Error, "abandoned unacknowledged")
		commit.End()
		log.Warn("sink: abandoning batch unacknowledged", "messages", n)
		return
	}
	if commit.IsRecording() {
		commit.SetAttributes(attribute.Int("waypoint.batch.events", len(b.events)), attribute.Int("waypoint.batch.dead_letters", len(b.poisons)))
		for table, rows := range res.Rows {
			commit.SetAttributes(attribute.Int64("waypoint.rows."+table, rows))
		}
	}
	commit.End()
	if met != nil {
		met.SinkBatchSize.Observe(float64(n))
		met.SinkCommitSeconds.Observe(time.Since(start).Seconds())
		for table, rows := range res.Rows {
			met.RowsWritten.WithLabelValues(table).Add(float64(rows))
		}
		for i := range b.poisons {
			met.DeadLetters.WithLabelValues("sink", b.poisons[i].reason).Inc()
		}
	}
	r.s.dedup.commitOrNone(wctx, b.evKeys)
	for i := range b.poisons {
		if err := publishDeadLetter(wctx, r.js, &b.poisons[i]); err != nil {
			log.Error("sink: dead-letter stream publish failed (the dead_letters row is stored)", "err", err)
		}
	}
	if o.OnBatch != nil {
		lo := 0
		for i, c := range b.chunks {
			b.parts[i].Seqs = slices.Clone(b.seqs[lo : lo+len(c.msgs)])
			lo += len(c.msgs)
		}
		o.OnBatch(BatchInfo{Replica: r.id, Partitions: slices.Clone(b.parts),
			Written: len(b.events), Duplicates: b.dups, DeadLetters: len(b.poisons)})
	}
	for _, m := range b.msgs {
		_ = m.Ack()
	}
	r.s.batches.Add(1)
	r.s.messages.Add(int64(n))
	r.s.written.Add(int64(len(b.events)))
	r.s.dead.Add(int64(len(b.poisons)))
	r.s.writerDead.Add(int64(res.DeadLetters))
}

var attrDuplicate = attribute.Bool("waypoint.dedupe.hit", true)

// startProcess starts m's sink.process span under the trace context in
// its headers, with the event's attributes from the headers.
func (r *replica) startProcess(m jetstream.Msg) trace.Span {
	h := m.Headers()
	ctx := r.s.opts.Propagator.Extract(context.Background(), bus.HeaderCarrier(h))
	attrs := make([]attribute.KeyValue, 0, 5)
	if v, err := strconv.ParseUint(h.Get(bus.HeaderShard), 10, 32); err == nil {
		attrs = append(attrs, telemetry.Shard(uint32(v)))
	}
	if v, err := strconv.ParseInt(h.Get(bus.HeaderEventID), 10, 64); err == nil {
		attrs = append(attrs, telemetry.AttrEventID.Int64(v))
	}
	if v := h.Get(bus.HeaderEventType); v != "" {
		attrs = append(attrs, telemetry.AttrEventType.String(v))
	}
	if v, err := strconv.ParseUint(h.Get(bus.HeaderFID), 10, 64); err == nil {
		attrs = append(attrs, telemetry.FID(v))
	}
	if v := h.Get(bus.HeaderHash); v != "" {
		attrs = append(attrs, telemetry.AttrMessageHash.String("0x"+strings.ToLower(v)))
	}
	_, span := r.s.tracer.Start(ctx, telemetry.SpanSinkProcess, trace.WithAttributes(attrs...), trace.WithSpanKind(trace.SpanKindConsumer))
	return span
}

func newPoison(m jetstream.Msg, seq uint64, reason, detail string, hash []byte) poison {
	p := poison{reason: reason, detail: detail, hash: hash, msg: m, seq: seq}
	h := m.Headers()
	if v, err := strconv.ParseInt(h.Get(bus.HeaderShard), 10, 32); err == nil {
		s := int32(v)
		p.shard = &s
	}
	if v, err := strconv.ParseUint(h.Get(bus.HeaderEventID), 10, 63); err == nil {
		id := int64(v)
		p.eventID = &id
	}
	return p
}

// write stores the batch's poison messages and events, retrying with
// backoff while the database is unavailable. It returns false when wctx
// ended first.
func (r *replica) write(ctx, wctx context.Context, log *slog.Logger, b *batch) (WriteResult, bool) {
	var res WriteResult
	delay := 100 * time.Millisecond
	deadDone := false
	for attempt := 1; ; attempt++ {
		err := r.writeOnce(wctx, b, &deadDone, &res)
		if err == nil {
			return res, true
		}
		if wctx.Err() != nil {
			return res, false
		}
		r.s.retries.Add(1)
		if attempt >= maxWriteAttempts && r.s.opts.Pool.Ping(wctx) == nil {
			log.Error("sink: batch keeps failing on a healthy database, writing its events one by one", "err", err)
			if r.writeSingly(wctx, b, &res) == nil {
				return res, true
			}
		}
		log.Warn("sink: write failed, retrying", "attempt", attempt, "err", err, "in", delay)
		if !sleep(wctx, delay) {
			return res, false
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (r *replica) writeOnce(ctx context.Context, b *batch, deadDone *bool, res *WriteResult) error {
	if !*deadDone {
		if err := insertDeadLetters(ctx, r.s.opts.Pool, b.poisons); err != nil {
			return err
		}
		*deadDone = true
	}
	wr, err := r.w.Write(ctx, b.events)
	if err != nil {
		return err
	}
	*res = wr
	return nil
}

// writeSingly writes b's events one at a time and dead-letters those that
// fail while the database is healthy.
func (r *replica) writeSingly(ctx context.Context, b *batch, res *WriteResult) error {
	kept := b.events[:0]
	keys := b.evKeys[:0]
	var bad []poison
	for i, ev := range b.events {
		wr, err := r.w.Write(ctx, []*pb.HubEvent{ev})
		if err == nil {
			res.DeadLetters += wr.DeadLetters
			kept = append(kept, ev)
			keys = append(keys, b.evKeys[i])
			continue
		}
		if perr := r.s.opts.Pool.Ping(ctx); perr != nil {
			return err
		}
		raw, _ := proto.Marshal(ev)
		p := poison{reason: "store_failed", detail: err.Error(), msg: rawMsg{data: raw}}
		if m := r.s.opts.Metrics; m != nil {
			m.DeadLetters.WithLabelValues("sink", p.reason).Inc()
		}
		s, id := int32(ev.ShardIndex), int64(ev.Id)
		p.shard, p.eventID = &s, &id
		bad = append(bad, p)
	}
	if err := insertDeadLetters(ctx, r.s.opts.Pool, bad); err != nil {
		return err
	}
	b.events, b.evKeys = kept, keys
	return nil
}

// rawMsg stands in for a bus message when a dead letter is made from a
// decoded event; only its data is used.
type rawMsg struct {
	jetstream.Msg
	data []byte
}

func (m rawMsg) Data() []byte { return m.data }

func (d *dedupe) seenOrNone(ctx context.Context, keys []string, seen []bool) {
	if d == nil {
		clear(seen)
		return
	}
	d.seen(ctx, keys, seen)
}

func (d *dedupe) commitOrNone(ctx context.Context, keys []string) {
	if d != nil {
		d.commit(ctx, keys)
	}
}
