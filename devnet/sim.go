package devnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// Sim is a simulated Snapchain node: per-shard event streams, the merged
// state behind them, a workload generator and fault injection. Its methods
// are safe for concurrent use.
type Sim struct {
	opts Options

	mu            sync.RWMutex // guards everything below, and the shards' pending blocks
	fids          map[uint64]*fidState
	names         map[string]*pb.UserNameProof
	shards        []*shard // index = shard id; shards[0] is the block shard and holds no events
	clock         time.Duration
	height0       uint64
	numMessages   int
	numRegistered int
	appended      int // events ever cut into blocks, across shards
	chainSeq      uint64
	gen           *generator
	genActions    float64 // actions owed to the current block by Rate
	faultDropNext []int   // per shard: hide the next n events from live streams

	notifyMu sync.Mutex
	notify   chan struct{}
	// workloadDone is closed once the workload will submit nothing more.
	workloadDone chan struct{}

	unavailableEvery atomic.Int64
	stallUntil       atomic.Int64 // unix nanoseconds
	serving          atomic.Bool
	subscribers      chan struct{} // one token per open Subscribe stream
	subscriptions    atomic.Uint64 // Subscribe streams positioned so far
}

// shard is one data shard's block chain and stored events.
type shard struct {
	id       uint32
	height   uint64
	prevHash [32]byte
	pending  []pendingEvent
	log      eventLog
	dropSeen int // events seen by the DropEvery fault
}

// New builds a simulator and runs its preload. It does not serve; call
// Serve, or use Run.
func New(opts Options) (*Sim, error) {
	opts = opts.withDefaults()
	if opts.Start.Before(message.FarcasterEpoch) {
		return nil, fmt.Errorf("devnet: start %v is before the Farcaster epoch", opts.Start)
	}
	if opts.FIDs < 0 || opts.Preload < 0 {
		return nil, errors.New("devnet: fids and preload must not be negative")
	}
	if opts.Preload > 0 && opts.FIDs == 0 {
		return nil, errors.New("devnet: preload needs a workload: set fids")
	}
	s := &Sim{
		opts:          opts,
		fids:          make(map[uint64]*fidState),
		names:         make(map[string]*pb.UserNameProof),
		shards:        make([]*shard, opts.Shards+1),
		faultDropNext: make([]int, opts.Shards+1),
		notify:        make(chan struct{}),
		subscribers:   make(chan struct{}, opts.Serving.MaxSubscribers),
		workloadDone:  make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i] = &shard{id: uint32(i)}
	}
	s.unavailableEvery.Store(int64(opts.Faults.UnavailableEvery))
	if opts.FIDs > 0 {
		s.gen = newGenerator(opts)
	} else {
		close(s.workloadDone)
	}
	if opts.Preload > 0 {
		start := time.Now()
		s.preload(opts.Preload)
		opts.Logger.Info("devnet preload done", "events", s.totalEvents(), "took", time.Since(start).Round(time.Millisecond))
	}
	return s, nil
}

// Run builds a simulator from opts and serves it on lis until ctx ends,
// then writes the ground-truth state to opts.DumpState if set.
func Run(ctx context.Context, opts Options, lis net.Listener) error {
	s, err := New(opts)
	if err != nil {
		return err
	}
	serveErr := s.Serve(ctx, lis)
	if opts.DumpState != "" {
		if err := s.dumpStateFile(opts.DumpState); err != nil {
			return errors.Join(serveErr, err)
		}
	}
	return serveErr
}

func (s *Sim) dumpStateFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("devnet: create state dump: %w", err)
	}
	if err := s.DumpState(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("devnet: write state dump: %w", err)
	}
	return nil
}

// Serve serves the HubService on lis and produces blocks (and the
// workload, if configured) until ctx ends. It can be called once.
func (s *Sim) Serve(ctx context.Context, lis net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("devnet: Serve called twice")
	}
	srv := s.grpcServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.produce(ctx)
	}()
	if f := s.opts.Faults; f.StallEvery > 0 && f.StallFor > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(f.StallEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					s.Stall(f.StallFor)
				}
			}
		}()
	}
	s.opts.Logger.Info("devnet serving", "addr", lis.Addr().String(), "shards", s.opts.Shards)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("devnet: serve: %w", err)
		}
	}
	cancel()
	srv.Stop()
	wg.Wait()
	return err
}

// produce cuts blocks and runs the live workload.
func (s *Sim) produce(ctx context.Context) {
	var stop <-chan time.Time
	workload := s.gen != nil
	if workload && s.opts.Duration > 0 {
		t := time.NewTimer(s.opts.Duration)
		defer t.Stop()
		stop = t.C
	}
	if s.opts.BlockInterval > 0 {
		t := time.NewTicker(s.opts.BlockInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				workload, stop = false, nil
				s.finishWorkload()
			case <-t.C:
				s.tick(workload)
			}
		}
	}
	if !workload {
		return
	}
	// No block interval: every workload step is a block, paced by Rate.
	start := time.Now()
	var done float64
	for {
		due := time.Since(start).Seconds()*s.opts.Rate - done
		for due >= 1 {
			n := s.stepBlock()
			done += float64(n)
			due -= float64(n)
			select {
			case <-ctx.Done():
				return
			case <-stop:
				s.finishWorkload()
				return
			default:
			}
		}
		wait := time.Duration((1 - due) / s.opts.Rate * float64(time.Second))
		if wait < time.Millisecond {
			wait = time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-stop:
			s.finishWorkload()
			return
		case <-time.After(wait):
		}
	}
}

// finishWorkload marks the workload over. Every action it produced is in
// a block by now: a step or tick cuts its blocks before the next select.
func (s *Sim) finishWorkload() {
	s.opts.Logger.Info("devnet workload finished")
	close(s.workloadDone)
}

// Subscriptions counts the Subscribe streams opened so far. A stream is
// counted once its position is fixed: it receives every event appended
// after that, so state read from the node afterwards and the stream
// together miss nothing.
func (s *Sim) Subscriptions() uint64 { return s.subscriptions.Load() }

// WorkloadDone is closed once the live workload has ended (Options.Duration
// passed) with every event it produced cut into a block, or from the start
// when there is no workload; it is never closed for a workload without a
// Duration. Shard heights are no sign of it: with a BlockInterval empty
// blocks keep coming, and under CPU load a running workload can leave them
// still for a while.
func (s *Sim) WorkloadDone() <-chan struct{} { return s.workloadDone }

// tick produces one block on every shard, with the workload's actions for
// it when the workload runs.
func (s *Sim) tick(workload bool) {
	var plan []action
	if workload {
		s.mu.Lock()
		plan = s.planBlockLocked(s.clock + s.opts.BlockInterval)
		s.mu.Unlock()
		signActions(plan)
	}
	s.mu.Lock()
	s.clock += s.opts.BlockInterval
	s.applyLocked(plan)
	s.cutAllLocked(true)
	s.mu.Unlock()
	s.broadcast()
}

// stepBlock runs one workload step as its own block and returns how many
// actions it had.
func (s *Sim) stepBlock() int {
	s.mu.Lock()
	plan := s.gen.step(s.clock)
	s.mu.Unlock()
	signActions(plan)
	s.mu.Lock()
	s.clock += time.Duration(float64(len(plan)) / s.opts.Rate * float64(time.Second))
	s.applyLocked(plan)
	s.cutAllLocked(false)
	s.mu.Unlock()
	s.broadcast()
	return len(plan)
}

// planBlockLocked draws the workload actions of the block ending at clock.
func (s *Sim) planBlockLocked(clock time.Duration) []action {
	// A block holds at most maxSeq-1 events per shard: a rate beyond that
	// is capped rather than queued without bound.
	s.genActions = min(s.genActions+s.opts.Rate*s.opts.BlockInterval.Seconds(), maxSeq-1)
	var plan []action
	for s.genActions >= 1 {
		step := s.gen.step(clock)
		plan = append(plan, step...)
		s.genActions -= float64(len(step))
	}
	return plan
}

// preload generates blocks until the shards have produced n events.
// Planning runs ahead of merging so that signatures, the expensive part,
// are computed on all cores.
func (s *Sim) preload(n int) {
	const batch = 4096
	type block struct {
		clock time.Duration
		plan  []action
	}
	for {
		s.mu.Lock()
		remaining := n - s.appended
		if remaining <= 0 {
			s.mu.Unlock()
			return
		}
		remaining = min(remaining, batch)
		var blocks []block
		clock := s.clock
		for planned := 0; planned < remaining; {
			var b block
			if s.opts.BlockInterval > 0 {
				clock += s.opts.BlockInterval
				b = block{clock: clock, plan: s.planBlockLocked(clock)}
				planned += int(s.opts.Shards)
			} else {
				b.plan = s.gen.step(clock)
				clock += time.Duration(float64(len(b.plan)) / s.opts.Rate * float64(time.Second))
				b.clock = clock
				planned++
			}
			planned += len(b.plan)
			blocks = append(blocks, b)
		}
		s.mu.Unlock()
		var all []action
		for _, b := range blocks {
			all = append(all, b.plan...)
		}
		signActions(all)
		s.mu.Lock()
		for _, b := range blocks {
			s.clock = b.clock
			s.applyLocked(b.plan)
			s.cutAllLocked(s.opts.BlockInterval > 0)
		}
		s.mu.Unlock()
	}
}

func (s *Sim) totalEvents() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.appended
}

// applyLocked merges planned actions.
func (s *Sim) applyLocked(plan []action) {
	for i := range plan {
		a := &plan[i]
		switch {
		case a.msg != nil:
			m, d := a.msg, a.msg.Data
			if d == nil {
				// An earlier message submitted again: its data were dropped
				// once merged (below) and are decoded back from data_bytes.
				d = new(pb.MessageData)
				if err := proto.Unmarshal(m.DataBytes, d); err != nil {
					s.opts.Logger.Error("devnet: decode generated message", "err", err)
					continue
				}
				m = &pb.Message{Data: d, Hash: m.Hash, HashScheme: m.HashScheme, Signature: m.Signature,
					SignatureScheme: m.SignatureScheme, Signer: m.Signer, DataBytes: m.DataBytes}
			}
			raw, err := deterministic.Marshal(m)
			if err != nil {
				s.opts.Logger.Error("devnet: encode generated message", "err", err)
				continue
			}
			var h [20]byte
			copy(h[:], m.Hash)
			_ = s.mergeLocked(raw, h, d)
			// The generator keeps a few messages for duplicates; without
			// their decoded data they take a fraction of the memory.
			a.msg.Data = nil
		case a.onchain != nil:
			_ = s.mergeOnChainLocked(a.onchain)
		case a.proof != nil:
			_ = s.mergeProofLocked(a.proof)
		case a.remerge != nil:
			var h [20]byte
			copy(h[:], a.remerge.Hash)
			s.remergeLocked(a.fid, h)
		}
	}
}

// cutAllLocked cuts a block on every shard, as a ticking chain does; with
// everyShard false (no block interval) it cuts only shards with pending
// events, as many blocks as they need.
func (s *Sim) cutAllLocked(everyShard bool) {
	cut := false
	for _, sh := range s.shards[1:] {
		if everyShard {
			s.cutLocked(sh)
			cut = true
			continue
		}
		for len(sh.pending) > 0 {
			s.cutLocked(sh)
			cut = true
		}
	}
	if cut {
		s.height0++
	}
}

// cutLocked turns up to a block's worth of the shard's pending events into
// its next block: BLOCK_CONFIRMED first (seq 0, counting the whole block,
// itself included), then the events in order.
func (s *Sim) cutLocked(sh *shard) {
	n := len(sh.pending)
	if n > maxSeq-1 {
		n = maxSeq - 1
	}
	evs := sh.pending[:n]
	height := sh.height + 1
	ts := uint64(message.Timestamp(s.opts.Start.Add(s.clock)))

	counts := map[int32]uint64{int32(pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED): 1}
	h := sha256.New()
	h.Write(sh.prevHash[:])
	var hdr [20]byte
	binary.BigEndian.PutUint32(hdr[0:], sh.id)
	binary.BigEndian.PutUint64(hdr[4:], height)
	binary.BigEndian.PutUint64(hdr[12:], ts)
	h.Write(hdr[:])
	for _, ev := range evs {
		if ev.raw != nil {
			if ev.rawTy != typeUnknown {
				counts[int32(ev.rawTy)]++
			}
			h.Write(ev.raw)
			continue
		}
		counts[int32(ev.typ)]++
		h.Write(ev.body)
	}
	var blockHash [32]byte
	h.Sum(blockHash[:0])

	confirmed, err := deterministic.Marshal(&pb.BlockConfirmedBody{
		BlockNumber:         height,
		ShardIndex:          sh.id,
		Timestamp:           ts,
		BlockHash:           blockHash[:],
		TotalEvents:         uint64(n + 1),
		EventCountsByType:   counts,
		MaxBlockEventSeqnum: uint64(n),
	})
	if err != nil {
		// A BlockConfirmedBody of plain numbers always encodes.
		s.opts.Logger.Error("devnet: encode block confirmation", "err", err)
		return
	}
	bufs := make([][]byte, 0, n+1)
	refs := make([]ref, 0, n+1)
	id := EventID(height, 0)
	b, _ := appendEvent(nil, pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED, id, fieldBlockConfirm, confirmed, height, sh.id, ts)
	bufs = append(bufs, b)
	refs = append(refs, ref{id: id, typ: uint8(pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED)})
	owned := make([]dupLayout, len(evs)) // per event: the layout its owner's message takes
	msgAt := make([]int, len(evs))
	for i, ev := range evs {
		id := EventID(height, uint64(i+1))
		r := ref{id: id, typ: uint8(ev.typ)}
		if ev.raw != nil {
			bufs = append(bufs, ev.raw)
			r.typ = ev.rawTy
		} else {
			b, at := appendEvent(nil, ev.typ, id, ev.field, ev.body, height, sh.id, ts)
			// Store the carried message's second copy of its data only
			// by reference.
			if ma, mn := firstBytesField(ev.body); mn > 0 && ev.typ != pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT &&
				ev.typ != pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF {
				if ml, ok := messageDup(ev.body[ma : ma+mn]); ok {
					if el, ok := ml.shift(at + ma); ok {
						b, r.dup = el.compact(b), el
						owned[i], msgAt[i] = ml, at+ma
					}
				}
			}
			bufs = append(bufs, b)
		}
		if s.dropLocked(sh) {
			r.flags |= flagHidden
		}
		refs = append(refs, r)
	}
	sh.log.appendBlock(blockMark{height: height, ts: ts}, bufs, refs)
	s.appended += len(bufs)
	// Point each newly stored message at its (compact) copy in its merge
	// event, so that it is kept once.
	for i, ev := range evs {
		e := ev.owner
		if e == nil || e.shared || e.dup.n != 0 {
			continue
		}
		stored := bufs[i+1]
		if l := owned[i]; l.n > 0 && len(e.raw) >= int(l.at)+int(l.n) {
			cm := stored[msgAt[i] : msgAt[i]+len(e.raw)-int(l.n)]
			if bytes.Equal(cm[:l.at], e.raw[:l.at]) && bytes.Equal(cm[l.at:], e.raw[int(l.at)+int(l.n):]) {
				e.raw, e.dup, e.shared = cm, l, true
			}
		}
	}
	sh.height = height
	sh.prevHash = blockHash
	sh.pending = append(sh.pending[:0:0], sh.pending[n:]...)
	if keep := uint64(s.opts.Retention / time.Second); ts > keep {
		s.expireLocked(sh, sh.log.posOfTime(ts-keep))
	}
}

// expireLocked drops the shard's events before position pos. Stored
// messages whose bytes live in those events get their own copy first, so
// the arenas can be released.
func (s *Sim) expireLocked(sh *shard, pos uint64) int {
	for _, ev := range sh.log.mergesBefore(pos) {
		s.unshareLocked(mergedMessage(ev))
	}
	return sh.log.expireBefore(pos)
}

// unshareLocked gives the stored message encoded as raw its own bytes if
// it still points into an event.
func (s *Sim) unshareLocked(raw []byte) {
	m := new(pb.Message)
	if raw == nil || proto.Unmarshal(raw, m) != nil || len(m.Hash) != 20 {
		return
	}
	d, err := messageData(m)
	if err != nil || d == nil {
		return
	}
	f := s.fids[d.Fid]
	if f == nil {
		return
	}
	probe := &entry{}
	copy(probe.hash[:], m.Hash)
	var e *entry
	if d.Type == pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE {
		if cs := f.compact[d.GetLinkCompactStateBody().GetType()]; cs != nil {
			e = cs.e
		}
	} else if k, err := classify(d, probe); err == nil {
		e = f.stores[k].byKey[probe.key]
	}
	if e != nil && e.shared && e.hash == probe.hash {
		e.raw, e.shared = bytes.Clone(e.raw), false
	}
}

// dropLocked decides whether the shard's next event is hidden from live
// streams.
func (s *Sim) dropLocked(sh *shard) bool {
	if s.faultDropNext[sh.id] > 0 {
		s.faultDropNext[sh.id]--
		return true
	}
	if every := s.opts.Faults.DropEvery; every > 0 {
		sh.dropSeen++
		if sh.dropSeen%every == 0 {
			return true
		}
	}
	return false
}

// broadcast wakes every stream waiting for new events.
func (s *Sim) broadcast() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

func (s *Sim) waitCh() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

func (s *Sim) shardFor(fid uint64) uint32 { return hub.ShardFor(fid, s.opts.Shards) }

// ShardFor returns the data shard that holds fid's messages.
func (s *Sim) ShardFor(fid uint64) uint32 { return s.shardFor(fid) }

// Shards returns the number of data shards.
func (s *Sim) Shards() uint32 { return s.opts.Shards }

// Network returns the network messages carry.
func (s *Sim) Network() pb.FarcasterNetwork { return s.opts.Network }

// flushLocked cuts pending events right away when there is no block
// interval to wait for.
func (s *Sim) flushLocked() bool {
	if s.opts.BlockInterval > 0 {
		return false
	}
	pending := false
	for _, sh := range s.shards[1:] {
		pending = pending || len(sh.pending) > 0
	}
	if pending {
		s.cutAllLocked(false)
	}
	return pending
}

// Submit merges externally built messages through the node's rules, as if
// they had been submitted to the node and included in the next block of
// their shard. A message that fails validation (hash, signature, network)
// is refused with no event, as the node's RPC refuses it; one that fails a
// merge rule produces a MERGE_FAILURE event. The returned error joins one
// error per message not merged; merge failures are *MergeError.
//
// With no BlockInterval the events are in the stream when Submit returns.
func (s *Sim) Submit(msgs ...*pb.Message) error {
	ready := make([]prepared, len(msgs))
	parallel(len(msgs), func(i int) { ready[i] = s.prepare(i, msgs[i], message.CheckFull) })
	return s.mergePrepared(ready)
}

// prepared is a message checked and encoded for merging, or why not.
type prepared struct {
	raw  []byte
	hash [20]byte
	data *pb.MessageData
	err  error
}

// prepare validates message i of a submission under mode and encodes it.
// It takes no lock, so submissions are checked on every core.
func (s *Sim) prepare(i int, m *pb.Message, mode message.Mode) prepared {
	if err := message.Validate(m, mode, s.opts.Network); err != nil {
		return prepared{err: fmt.Errorf("devnet: message %d: %w", i, err)}
	}
	d := m.Data
	if m.DataBytes != nil {
		d = new(pb.MessageData)
		if err := proto.Unmarshal(m.DataBytes, d); err != nil {
			return prepared{err: fmt.Errorf("devnet: message %d: decode data_bytes: %w", i, err)}
		}
	}
	raw, err := deterministic.Marshal(m)
	if err != nil {
		return prepared{err: fmt.Errorf("devnet: message %d: encode: %w", i, err)}
	}
	p := prepared{raw: raw, data: d}
	copy(p.hash[:], m.Hash)
	return p
}

// mergePrepared merges the prepared messages in order under one lock and
// cuts their block when there is no block interval. The error joins, in
// order, why each message that was not merged was refused.
func (s *Sim) mergePrepared(ready []prepared) error {
	var errs []error
	s.mu.Lock()
	for _, p := range ready {
		if p.err != nil {
			errs = append(errs, p.err)
			continue
		}
		if err := s.mergeLocked(p.raw, p.hash, p.data); err != nil {
			errs = append(errs, err)
		}
	}
	cut := s.flushLocked()
	s.mu.Unlock()
	if cut {
		s.broadcast()
	}
	return errors.Join(errs...)
}

// SubmitOnChainEvents merges on-chain events (ID registrations, signers,
// storage rent, tier purchases) on their fids' shards. Duplicates (same
// type, block, log index and transaction) are refused.
func (s *Sim) SubmitOnChainEvents(evs ...*pb.OnChainEvent) error {
	return submitLocked(s, evs, "on-chain event", s.mergeOnChainLocked)
}

// SubmitUsernameProofs merges fname proofs, which appear on every shard.
func (s *Sim) SubmitUsernameProofs(proofs ...*pb.UserNameProof) error {
	return submitLocked(s, proofs, "username proof", s.mergeProofLocked)
}

// submitLocked merges items under the simulator's lock, cuts a block if
// one is due and wakes the subscribers; nil items are refused.
func submitLocked[T any](s *Sim, items []*T, what string, merge func(*T) *MergeError) error {
	var errs []error
	s.mu.Lock()
	for _, it := range items {
		if it == nil {
			errs = append(errs, errors.New("devnet: nil "+what))
			continue
		}
		if err := merge(it); err != nil {
			errs = append(errs, err)
		}
	}
	cut := s.flushLocked()
	s.mu.Unlock()
	if cut {
		s.broadcast()
	}
	return errors.Join(errs...)
}

// InjectRawEvent puts raw into the shard's stream as the next event of its
// next block, exactly as given: malformed protobuf, wrong ids, bad hashes.
// The block's BLOCK_CONFIRMED counts it in total_events (and under its type
// when the bytes parse). Streams deliver it whatever types they asked for
// unless it parses as a type they did not ask for.
func (s *Sim) InjectRawEvent(shard uint32, raw []byte) error {
	if shard == 0 || shard > s.opts.Shards {
		return fmt.Errorf("devnet: inject into shard %d: no such data shard", shard)
	}
	ev := pendingEvent{raw: append([]byte(nil), raw...), rawTy: injectedType(raw)}
	if len(ev.raw) == 0 {
		// An empty event would be indistinguishable from no event.
		ev.raw = []byte{}
	}
	s.mu.Lock()
	s.shards[shard].pending = append(s.shards[shard].pending, ev)
	cut := s.flushLocked()
	s.mu.Unlock()
	if cut {
		s.broadcast()
	}
	return nil
}

// DropNext hides the shard's next n events (block confirmations excepted)
// from live Subscribe streams: a silent gap that the BLOCK_CONFIRMED counts
// reveal. GetEvents and replays still return them.
func (s *Sim) DropNext(shard uint32, n int) {
	if shard == 0 || shard > s.opts.Shards {
		return
	}
	s.opts.Logger.Info("devnet: dropping events from live streams (fault injection)", "shard", shard, "events", n)
	s.mu.Lock()
	s.faultDropNext[shard] += n
	s.mu.Unlock()
}

// SetUnavailableEvery makes Subscribe streams end with UNAVAILABLE after
// every n events they send; 0 turns it off. It applies to streams opened
// afterwards.
func (s *Sim) SetUnavailableEvery(n int) { s.unavailableEvery.Store(int64(n)) }

// Stall stops every Subscribe stream from sending for d, starting now.
func (s *Sim) Stall(d time.Duration) {
	s.opts.Logger.Info("devnet: stalling streams (fault injection)", "for", d)
	until := time.Now().Add(d).UnixNano()
	for {
		cur := s.stallUntil.Load()
		if cur >= until || s.stallUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// ExpireEvents drops the shard's stored events with ids before id, as
// retention does, and returns how many were dropped.
func (s *Sim) ExpireEvents(shard uint32, before uint64) int {
	if shard == 0 || shard > s.opts.Shards {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shards[shard]
	return s.expireLocked(sh, sh.log.seek(before))
}

// Height returns the shard's latest block number (0 before the first).
func (s *Sim) Height(shard uint32) uint64 {
	if shard > s.opts.Shards {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if shard == 0 {
		return s.height0
	}
	return s.shards[shard].height
}

// OldestEventID returns the id of the shard's oldest kept event, or 0.
func (s *Sim) OldestEventID(shard uint32) uint64 {
	if shard == 0 || shard > s.opts.Shards {
		return 0
	}
	_, _, oldest := s.shards[shard].log.stats()
	return oldest
}
