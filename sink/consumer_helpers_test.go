package sink

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/bus"
	pb "github.com/waypointhq/waypoint/proto"
)

const testPartitions = 8

func openTestBus(t testing.TB) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir(), Partitions: testPartitions, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("open bus: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// workload is a set of events and the live hashes they leave behind.
type workload struct {
	events    []*pb.HubEvent
	fids      []uint64
	casts     map[string]bool
	reactions map[string]bool
	links     map[string]bool
}

// newWorkload builds, per FID, cast adds (some later removed), reactions
// and links, in an order the hub could emit.
func newWorkload(t testing.TB, seed uint64, fids int) *workload {
	rng := rand.New(rand.NewPCG(seed, 7))
	w := &workload{casts: map[string]bool{}, reactions: map[string]bool{}, links: map[string]bool{}}
	ts := uint32(100_000_000)
	for f := range fids {
		fid := uint64(1000 + f)
		w.fids = append(w.fids, fid)
		var adds []*pb.Message
		for i := range 8 {
			ts++
			m := castAdd(t, fid, ts, fmt.Sprintf("cast %d of %d", i, fid), nil)
			adds = append(adds, m)
			w.events = append(w.events, merge(m))
			w.casts[string(m.Hash)] = true
		}
		for _, i := range rng.Perm(len(adds))[:3] {
			ts++
			rm := castRemove(t, fid, ts, adds[i].Hash)
			w.events = append(w.events, merge(rm, adds[i]))
			delete(w.casts, string(adds[i].Hash))
		}
		for i := range 3 {
			ts++
			target := &pb.CastId{Fid: fid + 1, Hash: []byte(fmt.Sprintf("target-%08d-%04d", fid, i))}
			m := reaction(t, false, fid, ts, pb.ReactionType_REACTION_TYPE_LIKE, target, "")
			w.events = append(w.events, merge(m))
			w.reactions[string(m.Hash)] = true
		}
		for i := range 2 {
			ts++
			m := link(t, false, fid, ts, "follow", fid+uint64(i)+1)
			w.events = append(w.events, merge(m))
			w.links[string(m.Hash)] = true
		}
	}
	// Interleave FIDs as the network would while keeping each FID's order.
	perFid := map[uint64][]*pb.HubEvent{}
	for _, ev := range w.events {
		fid := eventFID(ev)
		perFid[fid] = append(perFid[fid], ev)
	}
	w.events = w.events[:0]
	for len(perFid) > 0 {
		for _, fid := range w.fids {
			q := perFid[fid]
			if len(q) == 0 {
				delete(perFid, fid)
				continue
			}
			w.events = append(w.events, q[0])
			perFid[fid] = q[1:]
		}
	}
	for i, ev := range w.events {
		ev.Id = uint64(i + 1)
	}
	return w
}

func eventFID(ev *pb.HubEvent) uint64 {
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		return b.MergeMessageBody.GetMessage().GetData().GetFid()
	case *pb.HubEvent_PruneMessageBody:
		return b.PruneMessageBody.GetMessage().GetData().GetFid()
	case *pb.HubEvent_RevokeMessageBody:
		return b.RevokeMessageBody.GetMessage().GetData().GetFid()
	}
	return 0
}

func eventHashes(ev *pb.HubEvent) [][]byte {
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		hs := [][]byte{b.MergeMessageBody.GetMessage().GetHash()}
		for _, d := range b.MergeMessageBody.GetDeletedMessages() {
			hs = append(hs, d.GetHash())
		}
		return hs
	case *pb.HubEvent_PruneMessageBody:
		return [][]byte{b.PruneMessageBody.GetMessage().GetHash()}
	case *pb.HubEvent_RevokeMessageBody:
		return [][]byte{b.RevokeMessageBody.GetMessage().GetHash()}
	}
	return nil
}

// busMsg wraps ev as ingest publishes it; data overrides the payload when
// non-nil.
func busMsg(ev *pb.HubEvent, data []byte) *nats.Msg {
	if data == nil {
		var err error
		if data, err = proto.Marshal(ev); err != nil {
			panic(err)
		}
	}
	fid := eventFID(ev)
	return bus.NewMsg(&bus.Event{Shard: ev.ShardIndex, ID: ev.Id, Type: ev.Type, FID: fid, HasFID: true,
		Hashes: eventHashes(ev), Data: data}, testPartitions)
}

func publish(t testing.TB, b *bus.Bus, msgs ...*nats.Msg) {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := b.PublishAsync(m)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish ack: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish ack timed out")
		}
	}
}

func publishEvents(t testing.TB, b *bus.Bus, evs []*pb.HubEvent) {
	t.Helper()
	msgs := make([]*nats.Msg, len(evs))
	for i, ev := range evs {
		msgs[i] = busMsg(ev, nil)
	}
	publish(t, b, msgs...)
}

// waitDrained waits until every partition consumer of group has no
// pending and no unacknowledged messages.
func waitDrained(t testing.TB, b *bus.Bus, group string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done := true
		var last string
		for p := range b.Partitions() {
			// A cluster electing leaders answers with errors for a while.
			info, err := consumerInfo(b, bus.ConsumerName(group, p))
			if err != nil {
				done, last = false, fmt.Sprintf("partition %d: %v", p, err)
				break
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				done = false
				last = fmt.Sprintf("partition %d: pending %d, ack pending %d", p, info.NumPending, info.NumAckPending)
				break
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream not drained within %s: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func consumerInfo(b *bus.Bus, name string) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.Stream().Consumer(ctx, name)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

func checkLive(t testing.TB, pool *pgxpool.Pool, w *workload) {
	t.Helper()
	for table, want := range map[string]map[string]bool{"casts": w.casts, "reactions": w.reactions, "links": w.links} {
		got := liveHashes(t, pool, table)
		if len(got) != len(want) {
			t.Errorf("%s: %d live rows, want %d", table, len(got), len(want))
		}
		for h := range want {
			if !got[h] {
				t.Errorf("%s: hash %x missing", table, h)
				break
			}
		}
	}
}

// observer records committed batches in the order they were processed.
type observer struct {
	mu      sync.Mutex
	batches []BatchInfo
}

func (o *observer) add(b BatchInfo) {
	o.mu.Lock()
	o.batches = append(o.batches, b)
	o.mu.Unlock()
}

// checkOrder asserts that each partition's sequences were processed in
// strictly increasing order, whichever replica processed them: two
// replicas consuming one partition at once, or a redelivery after a
// handoff, would break it.
func (o *observer) checkOrder(t testing.TB) (replicasPerPartition map[int]map[string]bool) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	last := map[int]uint64{}
	replicasPerPartition = map[int]map[string]bool{}
	for _, b := range o.batches {
		for _, part := range b.Partitions {
			p := part.Partition
			if replicasPerPartition[p] == nil {
				replicasPerPartition[p] = map[string]bool{}
			}
			replicasPerPartition[p][b.Replica] = true
			for _, s := range part.Seqs {
				if s <= last[p] {
					t.Errorf("partition %d: sequence %d processed by %s after %d", p, s, b.Replica, last[p])
					return
				}
				last[p] = s
			}
		}
	}
	return replicasPerPartition
}

func testOptions(b *bus.Bus, pool *pgxpool.Pool) Options {
	return Options{
		Bus: b, Pool: pool,
		BatchSize: 50, BatchTimeout: 20 * time.Millisecond,
		AckWait: 2 * time.Second, PinnedTTL: time.Second, MemberTTL: time.Second,
		ShutdownTimeout: 2 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
	}
}

// drainWith runs a sink with opts until the stream is drained, stops it,
// checks the database against w and the order of every partition, and
// returns the sink for its stats.
func drainWith(t testing.TB, b *bus.Bus, pool *pgxpool.Pool, opts Options, w *workload, obs *observer) *Sink {
	t.Helper()
	opts.OnBatch = obs.add
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitDrained(t, b, DefaultGroup, 60*time.Second)
	stop()
	checkLive(t, pool, w)
	obs.checkOrder(t)
	return s
}

// runSink runs s in the background; the returned function stops it and
// waits.
func runSink(t testing.TB, s *Sink) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("sink did not stop within 15s")
		}
	}
	t.Cleanup(stop)
	return stop
}
