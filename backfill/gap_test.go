package backfill_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/ingest"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// gapEnv is a simulator over gRPC and an embedded JetStream bus whose
// every partition has the sink group's consumer, driven by the test in
// place of a sink.
type gapEnv struct {
	sim       *devnet.Sim
	hub       *hub.Client
	bus       *bus.Bus
	consumers []jetstream.Consumer
	published uint64
}

func newGapEnv(t *testing.T) *gapEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim, addr := testsupport.StartDevnet(t, devnet.Options{Seed: 11, FIDs: 12, Preload: 200, Duration: time.Nanosecond})
	hc, err := hub.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hc.Close() })
	b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir(), Partitions: 4, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	e := &gapEnv{sim: sim, hub: hc, bus: b}
	for p := range b.Partitions() {
		c, err := b.PartitionConsumer(ctx, sink.DefaultGroup, p, bus.ConsumerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.consumers = append(e.consumers, c)
	}
	return e
}

// publish stores one event in the stream, which the sink group has yet
// to consume.
func (e *gapEnv) publish(t *testing.T, fid uint64) {
	t.Helper()
	e.published++
	msg := bus.NewMsg(&bus.Event{Shard: e.sim.ShardFor(fid), ID: e.published, Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
		FID: fid, HasFID: true, Data: []byte("event")}, e.bus.Partitions())
	if _, err := e.bus.JetStream().PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

// consumeAll acknowledges everything the stream holds on every partition,
// as a sink that caught up would.
func (e *gapEnv) consumeAll(t *testing.T) {
	t.Helper()
	for _, c := range e.consumers {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
}

// shardFIDs lists the FIDs registered on shard, from the simulator's
// ground truth.
func (e *gapEnv) shardFIDs(t *testing.T, shard uint32) []uint64 {
	t.Helper()
	var out []uint64
	for f := range testsupport.SettledState(t, e.sim).OnChainEvents[pb.OnChainEventType_EVENT_TYPE_ID_REGISTER] {
		if e.sim.ShardFor(f) == shard {
			out = append(out, f)
		}
	}
	if len(out) < 2 {
		t.Fatalf("%d registered FIDs on shard %d, want several", len(out), shard)
	}
	slices.Sort(out)
	return out
}

// takeJobs waits until q holds n queued FIDs, then claims every job and
// checks each is a priority reconciliation; it returns their FIDs, sorted.
func takeJobs(t *testing.T, q *backfill.Queue, n int, timeout time.Duration) []uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := q.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Queued.FIDs >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d FIDs queued after %v, want %d", st.Queued.FIDs, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var fids []uint64
	for {
		j, err := q.Claim(t.Context(), "test")
		if err != nil {
			t.Fatal(err)
		}
		if j == nil {
			break
		}
		if j.Kind != backfill.KindReconcile || !j.Priority {
			t.Errorf("job %s: kind %q, priority %v; want a priority %q job", j.ID, j.Kind, j.Priority, backfill.KindReconcile)
		}
		fids = append(fids, j.FIDs...)
	}
	slices.Sort(fids)
	return fids
}

// TestGapReconcilerQueuesAfterSinkCaughtUp reports gaps of every kind
// while the sink group has an event to consume that was published before
// them: nothing may be queued until the group acknowledged it, then a
// priority reconciliation of exactly the gap's FIDs, or of every FID of
// its shard when it names none.
func TestGapReconcilerQueuesAfterSinkCaughtUp(t *testing.T) {
	e := newGapEnv(t)
	cases := []struct {
		name string
		gaps []ingest.Gap
		want []uint64
	}{
		{name: "missing events of known fids", gaps: []ingest.Gap{{Shard: 1, Kind: ingest.GapMissingEvents, FIDs: []uint64{7, 3}}}, want: []uint64{3, 7}},
		{name: "retention: the whole shard", gaps: []ingest.Gap{{Shard: 1, Kind: ingest.GapRetention, FromID: 10, ToID: 90}}, want: e.shardFIDs(t, 1)},
		{name: "skipped blocks: the whole shard", gaps: []ingest.Gap{{Shard: 2, Kind: ingest.GapSkipped}}, want: e.shardFIDs(t, 2)},
		{name: "unpublishable over the payload limit: its fid", gaps: []ingest.Gap{{Shard: 2, Kind: ingest.GapUnpublishable, FIDs: []uint64{5}}}, want: []uint64{5}},
		{name: "unpublishable, does not parse: the whole shard", gaps: []ingest.Gap{{Shard: 2, Kind: ingest.GapUnpublishable}}, want: e.shardFIDs(t, 2)},
		{name: "two gaps while waiting: both", gaps: []ingest.Gap{
			{Shard: 1, Kind: ingest.GapMissingEvents, FIDs: []uint64{4}},
			{Shard: 2, Kind: ingest.GapMissingEvents, FIDs: []uint64{9}},
		}, want: []uint64{4, 9}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := testsupport.NewRedis(t)
			q := backfill.NewQueue(r.Client, backfill.WithPrefix(r.Prefix))
			// Pages of 2 make a shard's listing take several GetFids calls.
			h := backfill.GapReconciler(q, e.hub.Raw(), e.bus, backfill.WithGapLogger(quiet()),
				backfill.WithGapPollInterval(20*time.Millisecond), backfill.WithGapPageSize(2), backfill.WithGapBatchSize(100))
			e.publish(t, c.want[0])
			// HandleGap must return while the group is behind: the test
			// consumes only after it.
			for _, g := range c.gaps {
				if err := h.HandleGap(t.Context(), g); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(500 * time.Millisecond)
			st, err := q.Status(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if st.Queued.Jobs != 0 {
				t.Fatalf("queued %d jobs before the sink group consumed what preceded the gap", st.Queued.Jobs)
			}
			e.consumeAll(t)
			if got := takeJobs(t, q, len(c.want), 20*time.Second); !slices.Equal(got, c.want) {
				t.Errorf("reconciled fids %v, want %v", got, c.want)
			}
		})
	}
}

// TestGapReconcilerDrainTimeout: a sink that never catches up delays the
// reconciliation by the drain timeout, not forever.
func TestGapReconcilerDrainTimeout(t *testing.T) {
	e := newGapEnv(t)
	r := testsupport.NewRedis(t)
	q := backfill.NewQueue(r.Client, backfill.WithPrefix(r.Prefix))
	h := backfill.GapReconciler(q, e.hub.Raw(), e.bus, backfill.WithGapLogger(quiet()),
		backfill.WithGapPollInterval(20*time.Millisecond), backfill.WithGapDrainTimeout(time.Second))
	e.publish(t, 6)
	if err := h.HandleGap(t.Context(), ingest.Gap{Shard: e.sim.ShardFor(6), Kind: ingest.GapMissingEvents, FIDs: []uint64{6}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st, err := q.Status(t.Context()); err != nil || st.Queued.Jobs != 0 {
		t.Fatalf("queued %v jobs (err %v) well before the drain timeout", st.Queued.Jobs, err)
	}
	if got := takeJobs(t, q, 1, 20*time.Second); !slices.Equal(got, []uint64{6}) {
		t.Errorf("reconciled fids %v, want [6]", got)
	}
}
