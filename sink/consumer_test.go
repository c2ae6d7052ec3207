package sink

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
)

func TestSinkReplicas(t *testing.T) {
	for _, n := range []int{1, 4, 8} {
		t.Run(fmt.Sprintf("replicas=%d", n), func(t *testing.T) {
			b := openTestBus(t)
			pool := migratedPool(t)
			rd := testsupport.NewRedis(t)
			w := newWorkload(t, uint64(n), 40)
			publishEvents(t, b, w.events)

			var obs observer
			opts := testOptions(b, pool)
			opts.Replicas = n
			opts.Redis, opts.DedupePrefix = rd.Client, rd.Prefix
			opts.Validate = message.CheckFull
			st := drainWith(t, b, pool, opts, w, &obs).Stats()
			if st.Written != int64(len(w.events)) || st.DeadLetters != 0 {
				t.Errorf("stats %+v: want %d written, no dead letters", st, len(w.events))
			}
			if st.Replicas != 0 || st.PartitionsHeld != 0 {
				t.Errorf("after stop, %d replicas and %d partitions still running", st.Replicas, st.PartitionsHeld)
			}
		})
	}
}

// TestSinkRebalance starts replicas one after another while events flow,
// then stops them one by one; the partitions move between replicas without
// ever being processed out of order or by two replicas at once.
func TestSinkRebalance(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	w := newWorkload(t, 42, 60)
	var obs observer
	opts := testOptions(b, pool)
	opts.BatchSize = 10
	opts.OnBatch = obs.add

	var stops []func()
	start := func() {
		s, err := New(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, runSink(t, s))
	}
	chunks := 6
	per := (len(w.events) + chunks - 1) / chunks
	for i := range chunks {
		lo, hi := i*per, min((i+1)*per, len(w.events))
		publishEvents(t, b, w.events[lo:hi])
		switch {
		case i < 3:
			start()
		case i < 5:
			stops[0]()
			stops = stops[1:]
		}
		time.Sleep(1500 * time.Millisecond)
	}
	waitDrained(t, b, DefaultGroup, 60*time.Second)
	for _, stop := range stops {
		stop()
	}
	checkLive(t, pool, w)
	owners := obs.checkOrder(t)
	moved := 0
	for _, reps := range owners {
		if len(reps) > 1 {
			moved++
		}
	}
	if moved == 0 {
		t.Errorf("no partition changed replica while replicas joined and left: %v", owners)
	}
}

// TestSinkKillReplicas kills replicas abruptly (connection closed after the
// batch committed, before it is acknowledged) 24 times while draining.
func TestSinkKillReplicas(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	w := newWorkload(t, 7, 80)
	publishEvents(t, b, w.events)

	opts := testOptions(b, pool)
	opts.BatchSize = 10
	opts.MemberTTL, opts.PinnedTTL, opts.AckWait = 500*time.Millisecond, 500*time.Millisecond, time.Second

	type running struct {
		nc     *nats.Conn
		cancel context.CancelFunc
		done   chan struct{}
	}
	var (
		mu       sync.Mutex
		replicas = map[string]*running{}
		kills    atomic.Int64
		batches  atomic.Int64
	)
	const wantKills = 24
	var s *Sink
	spawn := func() {
		nc, err := nats.Connect(b.ClientURL())
		if err != nil {
			t.Error(err)
			return
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &running{nc: nc, cancel: cancel, done: make(chan struct{})}
		id := newReplicaID()
		mu.Lock()
		replicas[id] = r
		mu.Unlock()
		go func() {
			defer close(r.done)
			_ = s.runReplica(ctx, js, id)
		}()
	}
	opts.OnBatch = func(bi BatchInfo) {
		if batches.Add(1)%4 != 0 || kills.Load() >= wantKills {
			return
		}
		// Kill the replica that committed this batch, before it acks.
		mu.Lock()
		r := replicas[bi.Replica]
		delete(replicas, bi.Replica)
		mu.Unlock()
		if r == nil {
			return
		}
		r.nc.Close()
		r.cancel()
		kills.Add(1)
		go func() { <-r.done; spawn() }()
	}
	var err error
	if s, err = New(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		spawn()
	}
	deadline := time.Now().Add(90 * time.Second)
	for kills.Load() < wantKills && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if kills.Load() < wantKills {
		t.Fatalf("only %d kills happened", kills.Load())
	}
	waitDrained(t, b, DefaultGroup, 90*time.Second)
	mu.Lock()
	for _, r := range replicas {
		r.cancel()
		<-r.done
		r.nc.Close()
	}
	mu.Unlock()
	checkLive(t, pool, w)
}

// TestSinkPostgresOutage makes the database refuse connections and drops
// the open ones while the sink runs; it must hold its batch, retry and
// catch up without loss.
func TestSinkPostgresOutage(t *testing.T) {
	b := openTestBus(t)
	dbURL := testsupport.PostgresURL(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	migrateURL(t, pool)
	admin, err := pgx.Connect(ctx, testsupport.Env(t, "WAYPOINT_DATABASE__URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var dbName string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	setAllow := func(on bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS %t`, pgx.Identifier{dbName}.Sanitize(), on)); err != nil {
			t.Fatal(err)
		}
		if !on {
			if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, dbName); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer setAllow(true)

	w := newWorkload(t, 3, 40)
	opts := testOptions(b, pool)
	opts.BatchSize = 20
	opts.Replicas = 2
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	half := len(w.events) / 2
	publishEvents(t, b, w.events[:half])
	time.Sleep(300 * time.Millisecond)
	setAllow(false)
	publishEvents(t, b, w.events[half:])
	time.Sleep(3 * time.Second)
	before := s.Stats()
	if before.WriteRetries == 0 {
		t.Errorf("no write retried during the outage: %+v", before)
	}
	setAllow(true)
	waitDrained(t, b, DefaultGroup, 60*time.Second)
	stop()
	checkLive(t, pool, w)
}

func migrateURL(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

// TestSinkRedisDown points the dedupe cache at a closed port: the sink
// keeps storing everything and counts the errors.
func TestSinkRedisDown(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	w := newWorkload(t, 5, 30)
	publishEvents(t, b, w.events)
	opts := testOptions(b, pool)
	opts.Replicas = 2
	opts.Redis = redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer opts.Redis.Close()
	var obs observer
	if st := drainWith(t, b, pool, opts, w, &obs).Stats(); st.DedupeErrors == 0 || st.DedupeHits != 0 {
		t.Errorf("stats %+v: want dedupe errors and no hits", st)
	}
}

// TestSinkDedupe republishes stored events: the cache skips them, but a
// prune carrying the hash of an already seen merge is not skipped.
func TestSinkDedupe(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	rd := testsupport.NewRedis(t)
	a := castAdd(t, 77, 100_000_001, "pruned later", nil)
	c := castAdd(t, 77, 100_000_002, "stays", nil)
	first := []*pb.HubEvent{merge(a), merge(c)}
	for i, ev := range first {
		ev.Id = uint64(i + 1)
	}
	publishEvents(t, b, first)
	opts := testOptions(b, pool)
	opts.Redis, opts.DedupePrefix = rd.Client, rd.Prefix
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitDrained(t, b, DefaultGroup, 30*time.Second)
	if !isLive(t, pool, "casts", a.Hash) {
		t.Fatal("cast not stored")
	}
	// The same merges again (new ids, so the stream keeps them), and a
	// prune of a.
	again := []*pb.HubEvent{merge(a), merge(c), prune(a)}
	for i, ev := range again {
		ev.Id = uint64(10 + i)
	}
	publishEvents(t, b, again)
	waitDrained(t, b, DefaultGroup, 30*time.Second)
	stop()
	if isLive(t, pool, "casts", a.Hash) {
		t.Error("prune skipped: it shares the merge's hash")
	}
	if !isLive(t, pool, "casts", c.Hash) {
		t.Error("cast c lost")
	}
	st := s.Stats()
	if st.DedupeHits != 2 || st.Written != 3 {
		t.Errorf("stats %+v: want 2 dedupe hits and 3 events written", st)
	}
}

// TestSinkPoison sends undecodable bytes and a message whose hash does not
// match: both are dead-lettered in the table and the stream, acknowledged,
// and the partition keeps flowing. Replaying them keeps them dead-lettered.
func TestSinkPoison(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	ctx := context.Background()
	good := castAdd(t, 99, 100_000_001, "good", nil)
	bad := castAdd(t, 99, 100_000_002, "tampered", nil)
	bad.Hash = append([]byte(nil), bad.Hash...)
	bad.Hash[0] ^= 0xff
	after := castAdd(t, 99, 100_000_003, "after", nil)
	evGood, evBad, evAfter := merge(good), merge(bad), merge(after)
	evGood.Id, evBad.Id, evAfter.Id = 1, 2, 4
	garbage := busMsg(&pb.HubEvent{Id: 3, ShardIndex: 1, Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
		Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: good}}}, []byte{0xff, 0xff, 0xff, 0x01})
	publish(t, b, busMsg(evGood, nil), busMsg(evBad, nil), garbage, busMsg(evAfter, nil))

	opts := testOptions(b, pool)
	opts.Validate = message.CheckHash
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitDrained(t, b, DefaultGroup, 30*time.Second)
	stop()
	if !isLive(t, pool, "casts", good.Hash) || !isLive(t, pool, "casts", after.Hash) {
		t.Error("good casts around the poison messages were not stored")
	}
	if isLive(t, pool, "casts", bad.Hash) {
		t.Error("message with a bad hash was stored")
	}
	got := deadLetterReasons(t, pool)
	want := map[int64]string{2: string(message.ReasonHashMismatch), 3: ReasonUndecodable}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters by event id = %v, want %v", got, want)
	}
	dlq, err := b.JetStream().Stream(ctx, bus.DefaultDeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	for reason := range map[string]bool{string(message.ReasonHashMismatch): true, ReasonUndecodable: true} {
		m, err := dlq.GetLastMsgForSubject(ctx, bus.DeadLetterSubject(reason))
		if err != nil {
			t.Errorf("dead-letter stream has no %s message: %v", reason, err)
			continue
		}
		if m.Header.Get(bus.HeaderDeadLetterReason) != reason {
			t.Errorf("dead-letter message reason %q, want %q", m.Header.Get(bus.HeaderDeadLetterReason), reason)
		}
	}

	// Replay with validation: both fail again, with their reasons.
	wr := newTestWriter(t, pool)
	res, err := ReplayDeadLetters(ctx, pool, wr, ReplayOptions{All: true, Validate: message.CheckHash})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 0 || res.Failed != 2 {
		t.Errorf("replay: %+v, want 2 failed", res)
	}
	if got := deadLetterReasons(t, pool); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after replay, dead letters = %v, want %v", got, want)
	}
}

// TestReplayDeadLetters dead-letters valid events for the wrong network,
// then replays one by id against the right network: it is stored and its
// row deleted; the other stays.
func TestReplayDeadLetters(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	ctx := context.Background()
	m1 := castAdd(t, 55, 100_000_001, "one", nil)
	m2 := castAdd(t, 55, 100_000_002, "two", nil)
	e1, e2 := merge(m1), merge(m2)
	e1.Id, e2.Id = 1, 2
	publishEvents(t, b, []*pb.HubEvent{e1, e2})
	opts := testOptions(b, pool)
	opts.Validate, opts.Network = message.CheckFull, pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitDrained(t, b, DefaultGroup, 30*time.Second)
	stop()
	got := deadLetterReasons(t, pool)
	if len(got) != 2 || got[1] != string(message.ReasonNetwork) {
		t.Fatalf("dead letters = %v, want both wrong_network", got)
	}
	var id1 int64
	if err := pool.QueryRow(ctx, `SELECT id FROM dead_letters WHERE event_id = 1`).Scan(&id1); err != nil {
		t.Fatal(err)
	}
	wr := newTestWriter(t, pool)
	res, err := ReplayDeadLetters(ctx, pool, wr, ReplayOptions{IDs: []int64{id1, 999999},
		Validate: message.CheckFull, Network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 1 || res.Failed != 0 || res.Missing != 1 {
		t.Errorf("replay: %+v, want 1 stored, 1 missing", res)
	}
	if !isLive(t, pool, "casts", m1.Hash) || isLive(t, pool, "casts", m2.Hash) {
		t.Error("replay stored the wrong casts")
	}
	if got := deadLetterReasons(t, pool); len(got) != 1 || got[2] == "" {
		t.Errorf("after replay, dead letters = %v, want only event 2", got)
	}
}

func deadLetterReasons(t testing.TB, pool *pgxpool.Pool) map[int64]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT coalesce(event_id, -1), reason FROM dead_letters`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var reason string
		if err := rows.Scan(&id, &reason); err != nil {
			t.Fatal(err)
		}
		out[id] = reason
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOwnerSpreadsPartitions(t *testing.T) {
	members := []string{"a1", "b2", "c3", "d4"}
	counts := map[string]int{}
	for p := range 1024 {
		counts[owner(members, p)]++
	}
	for _, m := range members {
		if counts[m] < 180 || counts[m] > 330 {
			t.Errorf("member %s owns %d of 1024 partitions: %v", m, counts[m], counts)
		}
	}
	// Removing a member moves only its partitions.
	rest := members[1:]
	for p := range 1024 {
		before, after := owner(members, p), owner(rest, p)
		if before != "a1" && before != after {
			t.Fatalf("partition %d moved from %s to %s though %s stayed", p, before, after, before)
		}
	}
}

// pulls drains a workload of 20 FIDs (seed) with the test options as
// configure changes them, checking the database, and returns the options,
// the time from the sink's start until it stopped, and the messages of the
// largest pull, of the largest batch and of the busiest partition.
func pulls(t *testing.T, seed uint64, configure func(*Options)) (opts Options, took time.Duration, largestPull, largestBatch, busiest int) {
	t.Helper()
	b := openTestBus(t)
	pool := migratedPool(t)
	w := newWorkload(t, seed, 20)
	publishEvents(t, b, w.events)
	var obs observer
	opts = testOptions(b, pool)
	configure(&opts)
	start := time.Now()
	drainWith(t, b, pool, opts, w, &obs)
	took = time.Since(start)
	perPartition := map[int]int{}
	for _, bi := range obs.batches {
		n := 0
		for _, p := range bi.Partitions {
			largestPull = max(largestPull, len(p.Seqs))
			perPartition[p.Partition] += len(p.Seqs)
			n += len(p.Seqs)
		}
		largestBatch = max(largestBatch, n)
	}
	for _, n := range perPartition {
		busiest = max(busiest, n)
	}
	return opts, took, largestPull, largestBatch, busiest
}

// TestSinkPulledBytes bounds the bytes a process may hold pulled: with a
// budget below one message every pull brings a single message, yet the
// stream drains completely; with the default budget pulls bring many.
func TestSinkPulledBytes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		budget     int
		wantSingle bool
	}{
		{"budget below one message", 100, true},
		{"default budget", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, largest, _, _ := pulls(t, 9, func(o *Options) { o.MaxPulledBytes = tc.budget })
			if single := largest == 1; single != tc.wantSingle {
				t.Errorf("largest pull held %d messages; want single-message pulls: %t", largest, tc.wantSingle)
			}
		})
	}
}

// TestSinkPullSize checks that a partition's pulls take at most PullSize
// messages, which is also its consumer's MaxAckPending, and that a batch
// gathers the pulls of several partitions up to BatchSize.
func TestSinkPullSize(t *testing.T) {
	opts, _, largestPull, largestBatch, _ := pulls(t, 11, func(o *Options) {
		o.BatchSize, o.PullSize, o.BatchTimeout = 200, 10, 100*time.Millisecond
	})
	if largestPull != opts.PullSize {
		t.Errorf("largest pull held %d messages, want PullSize %d", largestPull, opts.PullSize)
	}
	if largestBatch <= opts.PullSize || largestBatch > opts.BatchSize {
		t.Errorf("largest batch held %d messages, want more than one pull's %d and at most BatchSize %d", largestBatch, opts.PullSize, opts.BatchSize)
	}
	info, err := consumerInfo(opts.Bus, bus.ConsumerName(DefaultGroup, 0))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAckPending != opts.PullSize {
		t.Errorf("consumer MaxAckPending %d, want PullSize %d", info.Config.MaxAckPending, opts.PullSize)
	}
}

// TestSinkDrainsBacklogBetweenPulls checks that a partition draining a
// backlog pulls again soon after a full pull instead of waiting
// BatchTimeout: the server ends a pull only by expiry, so with a long
// BatchTimeout and small pulls, waiting it out each time would take
// BatchTimeout per pull of the busiest partition.
func TestSinkDrainsBacklogBetweenPulls(t *testing.T) {
	opts, took, _, _, busiest := pulls(t, 12, func(o *Options) {
		// Batches of a few pulls fill at once, so the batcher's linger (a
		// fifth of BatchTimeout, for pulls arriving together) does not
		// count.
		o.BatchSize, o.PullSize, o.BatchTimeout = 12, 3, 2*time.Second
		o.AckWait = 3 * o.BatchTimeout
	})
	n := busiest / opts.PullSize
	if n < 10 {
		t.Fatalf("the busiest partition took %d pulls; the workload must need at least 10", n)
	}
	if waiting := time.Duration(n-1) * opts.BatchTimeout; took > waiting/3 {
		t.Errorf("drained in %v; waiting out BatchTimeout after each of the busiest partition's %d full pulls takes %v", took, n, waiting)
	}
}

// TestNewRejectsBatchTimeoutNearAckWait: a pull's messages are only kept in
// progress once it ends, so a batch timeout near the ack wait would have
// them redelivered, out of order, before they are written.
func TestNewRejectsBatchTimeoutNearAckWait(t *testing.T) {
	b := openTestBus(t)
	pool := migratedPool(t)
	opts := testOptions(b, pool)
	opts.BatchTimeout, opts.AckWait = 4*time.Second, 10*time.Second
	_, err := New(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "over a third of the ack wait") {
		t.Fatalf("New with a 4s batch timeout and a 10s ack wait: %v, want the timeout rejected", err)
	}
	opts.BatchTimeout = 3 * time.Second
	if _, err := New(context.Background(), opts); err != nil {
		t.Fatalf("New with a 3s batch timeout and a 10s ack wait: %v", err)
	}
}
