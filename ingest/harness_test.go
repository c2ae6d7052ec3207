package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// env is one test's simulator and JetStream server. The server is an
// embedded one listening on loopback, so each ingest run can have its own
// TCP connection that a test can kill.
type env struct {
	t    *testing.T
	sim  *devnet.Sim
	addr string
	hub  *hub.Client
	srv  *bus.Bus
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("WAYPOINT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t *testing.T, dopts devnet.Options, bopts bus.Options) *env {
	t.Helper()
	sim, addr := testsupport.StartDevnet(t, dopts)
	c, err := hub.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	bopts.StoreDir = t.TempDir()
	bopts.ListenAddr = "127.0.0.1:0"
	bopts.Logger = testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := bus.Open(ctx, bopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &env{t: t, sim: sim, addr: addr, hub: c, srv: srv}
}

// killDialer makes the connections of one bus and can cut them without
// letting anything buffered reach the server.
type killDialer struct {
	mu    sync.Mutex
	conns []net.Conn
	dead  bool
}

func (k *killDialer) Dial(network, address string) (net.Conn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return nil, errors.New("killed")
	}
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	k.conns = append(k.conns, c)
	return c, nil
}

func (k *killDialer) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead = true
	for _, c := range k.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST: drop what the kernel still holds
		}
		_ = c.Close()
	}
}

// client opens a bus over TCP to the env's server, as a separate ingest
// process would.
func (e *env) client(t testing.TB, d *killDialer) *bus.Bus {
	t.Helper()
	o := bus.Options{URL: e.srv.ClientURL(), Stream: e.srv.StreamName(), Partitions: e.srv.Partitions(), Logger: testLogger(t), PublishTimeout: 5 * time.Second,
		DuplicateWindow: e.dupWindow(t)}
	if d != nil {
		o.ConnOptions = []nats.Option{nats.SetCustomDialer(d), nats.ReconnectWait(20 * time.Millisecond)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dupWindow is the stream's duplicate window, which clients keep when they
// open the stream again.
func (e *env) dupWindow(t testing.TB) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := e.srv.StreamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Config.Duplicates
}

func (e *env) options(b *bus.Bus) Options {
	return Options{
		Hub:                e.hub.Raw(),
		Bus:                b,
		Logger:             testLogger(e.t),
		MinBackoff:         5 * time.Millisecond,
		MaxBackoff:         100 * time.Millisecond,
		CheckpointInterval: 50 * time.Millisecond,
		ShutdownTimeout:    2 * time.Second,
	}
}

// truth returns the shard's stored events of the subscribed types, as the
// node reports them through GetEvents (fully decoded, the default codec).
func (e *env) truth(t testing.TB, shard uint32) []*pb.HubEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*pb.HubEvent
	for page, err := range e.hub.EventsPages(ctx, shard, 0, 0, 5000) {
		if err != nil {
			t.Fatalf("truth: %v", err)
		}
		for _, ev := range page {
			if subscribed(ev.GetType()) {
				out = append(out, ev)
			}
		}
	}
	return out
}

// waitWorkload waits until the simulator has stopped producing blocks.
func (e *env) waitWorkload(t testing.TB, shards ...uint32) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	prev := ""
	stable := 0
	for time.Now().Before(deadline) {
		cur := ""
		for _, s := range shards {
			cur += fmt.Sprint(e.sim.Height(s), ",")
		}
		if cur == prev {
			stable++
			if stable >= 3 {
				return
			}
		} else {
			stable = 0
		}
		prev = cur
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("simulator workload did not stop")
}

// waitCheckpoints waits until every shard's checkpoint reaches the last
// event id the node has for it.
func waitCheckpoints(t testing.TB, in *Ingester, want map[uint32]uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := in.Stats()
		if reached(st, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoints did not reach %v: %+v", want, st.Shards)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type streamed struct {
	seq     uint64
	subject string
	header  nats.Header
	ev      bus.Event
	decoded *pb.HubEvent
}

// readStream returns every message of the events stream, per shard in
// stream order, checking each one's headers and subject against its
// decoded payload.
func readStream(t testing.TB, b *bus.Bus) map[uint32][]streamed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	info, err := b.StreamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := info.State.Msgs
	out := map[uint32][]streamed{}
	if total == 0 {
		return out
	}
	cons, err := b.JetStream().OrderedConsumer(ctx, b.StreamName(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for n < total {
		batch, err := cons.Fetch(int(min(total-n, 5000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			ev, err := bus.ParseMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			if err != nil {
				t.Fatalf("message %d: %v", md.Sequence.Stream, err)
			}
			var dec pb.HubEvent
			if err := proto.Unmarshal(m.Data(), &dec); err != nil {
				t.Fatalf("message %d: payload is not a HubEvent: %v", md.Sequence.Stream, err)
			}
			checkRouting(t, b.Partitions(), m.Subject(), m.Headers(), &ev, &dec)
			out[ev.Shard] = append(out[ev.Shard], streamed{seq: md.Sequence.Stream, subject: m.Subject(), header: m.Headers(), ev: ev, decoded: &dec})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("stream has %d messages, read %d", total, n)
		}
	}
	return out
}

// expectFID computes an event's FID from its fully decoded form, the way
// a reader of the generated types would.
func expectFID(t testing.TB, ev *pb.HubEvent) (uint64, bool) {
	fromMsg := func(m *pb.Message) uint64 {
		if m.GetData() != nil {
			return m.GetData().GetFid()
		}
		var d pb.MessageData
		if err := proto.Unmarshal(m.GetDataBytes(), &d); err != nil {
			t.Fatalf("data_bytes: %v", err)
		}
		return d.GetFid()
	}
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		return fromMsg(b.MergeMessageBody.GetMessage()), true
	case *pb.HubEvent_PruneMessageBody:
		return fromMsg(b.PruneMessageBody.GetMessage()), true
	case *pb.HubEvent_RevokeMessageBody:
		return fromMsg(b.RevokeMessageBody.GetMessage()), true
	case *pb.HubEvent_MergeOnChainEventBody:
		return b.MergeOnChainEventBody.GetOnChainEvent().GetFid(), true
	case *pb.HubEvent_MergeUsernameProofBody:
		p := b.MergeUsernameProofBody
		if f := p.GetUsernameProof().GetFid(); f != 0 {
			return f, true
		}
		if p.GetUsernameProofMessage() != nil {
			if f := fromMsg(p.GetUsernameProofMessage()); f != 0 {
				return f, true
			}
		}
		return p.GetDeletedUsernameProof().GetFid(), true
	}
	return 0, false
}

func checkRouting(t testing.TB, parts int, subject string, h nats.Header, ev *bus.Event, dec *pb.HubEvent) {
	t.Helper()
	if ev.ID != dec.GetId() || ev.Type != dec.GetType() || (dec.GetShardIndex() != 0 && ev.Shard != dec.GetShardIndex()) {
		t.Fatalf("%s: headers %+v disagree with payload id %d type %v shard %d", subject, ev, dec.GetId(), dec.GetType(), dec.GetShardIndex())
	}
	if got, want := h.Get(bus.HeaderMsgID), fmt.Sprintf("%d:%d", ev.Shard, ev.ID); got != want {
		t.Fatalf("%s: Nats-Msg-Id %q, want %q", subject, got, want)
	}
	fid, ok := expectFID(t, dec)
	if !ok {
		if subject != bus.BlockSubject(ev.Shard) || ev.HasFID {
			t.Fatalf("event %d (%v) on %s, want %s", ev.ID, ev.Type, subject, bus.BlockSubject(ev.Shard))
		}
		return
	}
	if want := bus.EventSubject(fid, parts); subject != want || ev.FID != fid {
		t.Fatalf("event %d (%v) of fid %d on %s (fid header %d), want %s", ev.ID, ev.Type, fid, subject, ev.FID, want)
	}
}

// checkExactlyOnce asserts the stream holds each truth event exactly once
// per shard, in id order, with the node's bytes; upTo, when non-nil, limits
// the truth to ids at or below it per shard.
func checkExactlyOnce(t testing.TB, got map[uint32][]streamed, truth map[uint32][]*pb.HubEvent, upTo map[uint32]uint64) {
	t.Helper()
	for shard, want := range truth {
		if upTo != nil {
			lim := upTo[shard]
			want = slices.DeleteFunc(slices.Clone(want), func(ev *pb.HubEvent) bool { return ev.GetId() > lim })
		}
		have := got[shard]
		for i := 1; i < len(have); i++ {
			if have[i].ev.ID <= have[i-1].ev.ID {
				t.Fatalf("shard %d: stream seq %d holds event %d after event %d (seq %d): duplicate or out of order",
					shard, have[i].seq, have[i].ev.ID, have[i-1].ev.ID, have[i-1].seq)
			}
		}
		ids := map[uint64]int{}
		for i, s := range have {
			ids[s.ev.ID] = i
		}
		var missing []uint64
		for _, ev := range want {
			i, ok := ids[ev.GetId()]
			if !ok {
				missing = append(missing, ev.GetId())
				continue
			}
			if !proto.Equal(have[i].decoded, ev) {
				t.Fatalf("shard %d event %d: payload differs from the node's", shard, ev.GetId())
			}
		}
		if len(missing) > 0 {
			t.Fatalf("shard %d: %d of %d events missing from the stream, first %v", shard, len(missing), len(want), missing[:min(len(missing), 5)])
		}
		if len(have) != len(want) {
			t.Fatalf("shard %d: stream has %d events, node %d", shard, len(have), len(want))
		}
	}
	for shard := range got {
		if _, ok := truth[shard]; !ok {
			t.Fatalf("stream has events of unexpected shard %d", shard)
		}
	}
}

func lastIDs(truth map[uint32][]*pb.HubEvent) map[uint32]uint64 {
	m := map[uint32]uint64{}
	for s, evs := range truth {
		if len(evs) > 0 {
			m[s] = evs[len(evs)-1].GetId()
		}
	}
	return m
}

// startKillable runs an ingester over a connection it can cut as in a
// crash; kill does so, cancels the run and waits for it to return.
func startKillable(t testing.TB, e *env, configure func(*Options)) (in *Ingester, kill func()) {
	t.Helper()
	d := &killDialer{}
	b := e.client(t, d)
	o := e.options(b)
	o.FromID = u64(0)
	o.ShutdownTimeout = 500 * time.Millisecond
	configure(&o)
	in, stop := startIngest(t, o)
	return in, func() {
		t.Helper()
		d.kill()
		b.Conn().Close()
		// A killed run may end with an error; it only has to end.
		if err := stop(); errors.Is(err, errNotStopped) {
			t.Fatal(err)
		}
		_ = b.Close()
	}
}

// finalRun runs ingest undisturbed to the end of the workload, checks that
// the stream holds every event exactly once and in order, and returns how
// many events it found already stored.
func finalRun(t *testing.T, e *env) (dups uint64) {
	t.Helper()
	b := e.client(t, nil)
	defer b.Close()
	o := e.options(b)
	o.FromID = u64(0)
	return sumStats(runToEnd(t, e, o)).Duplicates
}

// runToEnd runs ingest with o to the end of the workload and checks that
// the stream holds every event of both shards exactly once and in order.
func runToEnd(t *testing.T, e *env, o Options) *Ingester {
	t.Helper()
	in, truth := ingestAll(t, e, o)
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)
	return in
}

// ingestAll runs ingest with o until it checkpointed the last event of
// the workload on both shards, and returns the node's events.
func ingestAll(t *testing.T, e *env, o Options) (*Ingester, map[uint32][]*pb.HubEvent) {
	t.Helper()
	in, stop := startIngest(t, o)
	e.waitWorkload(t, 1, 2)
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return in, truth
}

var errNotStopped = errors.New("ingest did not stop within 30s")

// startIngest runs an ingester in the background; stop cancels it and
// returns Run's error.
func startIngest(t testing.TB, o Options) (in *Ingester, stop func() error) {
	t.Helper()
	in, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errNotStopped
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return in, stop
}

type gapRecorder struct {
	mu   sync.Mutex
	gaps []Gap
}

func (g *gapRecorder) HandleGap(_ context.Context, gap Gap) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gaps = append(g.gaps, gap)
	return nil
}

func (g *gapRecorder) list() []Gap {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.gaps)
}

func u64(v uint64) *uint64 { return &v }
