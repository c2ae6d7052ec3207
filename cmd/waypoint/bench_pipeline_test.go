package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// pipelineEventsEnv scales BenchmarkPipelineProcesses's backlog down for
// quick runs (events the simulator preloads).
const pipelineEventsEnv = "WAYPOINT_BENCH_PIPELINE_EVENTS"

// pipelineFIDs is the simulated users the backlog is spread over, as in
// ingest's backlog benchmark.
const pipelineFIDs = 2000

// pipelineStores are the tables each database is compared on with the
// simulator's ground truth.
var pipelineStores = []devnet.Store{
	devnet.StoreCasts, devnet.StoreReactions, devnet.StoreLinks, devnet.StoreVerifications, devnet.StoreUserData,
}

// BenchmarkPipelineProcesses runs the pipeline the way an operator deploys
// it, every stage an OS process of its own running the waypoint binary
// (built once with go build): `waypoint devnet --preload N` as the hub, a
// nats-server with JetStream and its own store, `waypoint ingest
// --from-id 0` publishing the whole backlog to it, and then `waypoint sink
// --replicas R` draining the stream into a fresh database.
//
// replicas=1 drains a backlog of 1M events, the size the sink's memory
// target is set for (WAYPOINT_BENCH_PIPELINE_EVENTS scales it); replicas=2
// and replicas=4 drain one of a tenth of that, published once, into a
// stream of another name after the first was deleted: each sink drains it
// after the group's consumers were deleted, so they start again from the
// first message, into a database of its own. Three drains of 1M are out
// of reach: on the loaded two-core development machine one sink replica
// drains 1M at about 1.4k msgs/s (the rate falls as the database grows),
// 12 minutes of the whole run's 14; make bench runs it at 250k events
// (under 3 minutes). The sink runs as deployed: with Redis (dedupe cache
// and an idle backfill queue under a prefix of its own), the default
// validation (hash) and metrics served on a free port. The simulator cuts
// a block a second as the network does, with the preload's blocks filled
// at its default rate, and no live workload after it.
//
// Reported on every line: backlog-msgs, the messages in the stream;
// sink-msgs/s, those over the time from the sink process's start until its
// group acknowledged them all (a message is acknowledged only once its
// batch committed); sink-peak-rss-MB, the sink's VmHWM; nats-peak-rss-MB,
// the server's so far; and from the run that published the backlog,
// ingest-events/s (messages over the time from ingest's start until the
// stream held every shard's last block), ingest-peak-rss-MB and
// devnet-peak-rss-MB. Peaks are read from /proc/<pid>/status just before
// each process is stopped. Where the two cores go while the sink drains:
// sink-, nats-, postgres- and redis-cpu-us/msg, the CPU time (user and
// system, from /proc/<pid>/stat) the sink process used from its start,
// and the JetStream server, every Postgres process and Redis over the
// drain, per message; cpu-share, their sum over the drain's time on all
// cores. Their sum per message bounds the rate on this machine whatever
// the sink does with its time. Ingest and sink run one after the other, so the
// pipeline's rate when both run at once is at most the lower of the two.
//
// A rate for a wrong result is worthless: each database must equal the
// simulator's ground truth (its --dump-state), fid by fid, for casts,
// reactions, links, verifications and user data, with no dead letters.
func BenchmarkPipelineProcesses(b *testing.B) {
	events := 1_000_000
	if v := os.Getenv(pipelineEventsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			b.Fatalf("%s=%q: want a number from 10 up", pipelineEventsEnv, v)
		}
		events = n
	}
	bin := buildWaypoint(b, b.TempDir())
	ns := testsupport.StartNATSServer(b)
	rdb := testsupport.NewRedis(b)
	env := []string{
		"WAYPOINT_HUB__NETWORK=devnet",
		"WAYPOINT_NATS__URL=" + ns.URL,
		"WAYPOINT_REDIS__URL=" + rdb.URL,
		"WAYPOINT_LOG__LEVEL=warn",
	}
	var bl *backlog
	for _, replicas := range []int{1, 2, 4} {
		switch replicas {
		case 1:
			bl = publishBacklog(b, bin, env, ns.URL, "WAYPOINT_EVENTS", events)
		case 2:
			// Streams on one server may not share subjects.
			bl.drop(b)
			bl = publishBacklog(b, bin, env, ns.URL, "WAYPOINT_EVENTS_SMALL", events/10)
		}
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			var took time.Duration
			var rss uint64
			cpu := map[string]time.Duration{}
			for i := 0; i < b.N; i++ {
				d := drainWithSink(b, bin, rdb.Prefix, bl, replicas, ns.PID())
				took += d.took
				rss = max(rss, d.rss)
				for part, t := range d.cpu {
					cpu[part] += t
				}
			}
			msgs := float64(bl.ingest.messages) * float64(b.N)
			rate := msgs / took.Seconds()
			b.Logf("%d replicas: %d messages, %.0f msgs/s, sink peak RSS %.0f MB", replicas, bl.ingest.messages, rate, mb(rss))
			b.Logf("%s while the sink drained", testsupport.ReportCPU(b, cpu, cpuParts, msgs, took))
			b.ReportMetric(float64(bl.ingest.messages), "backlog-msgs")
			b.ReportMetric(rate, "sink-msgs/s")
			b.ReportMetric(mb(rss), "sink-peak-rss-MB")
			b.ReportMetric(mb(peakRSS(b, ns.PID())), "nats-peak-rss-MB")
			b.ReportMetric(bl.ingest.rate(), "ingest-events/s")
			b.ReportMetric(mb(bl.ingest.rss), "ingest-peak-rss-MB")
			b.ReportMetric(mb(bl.devnetRSS), "devnet-peak-rss-MB")
		})
	}
}

// backlog is a simulator's preload published into a stream of its own.
type backlog struct {
	env       []string // configuration of the processes using the stream
	bus       *bus.Bus
	ingest    ingestRun
	devnetRSS uint64
	// truth holds the simulator's live items of pipelineStores.
	truth map[devnet.Store]map[uint64][]string
}

// drop deletes the backlog's stream.
func (bl *backlog) drop(b *testing.B) {
	b.Helper()
	if err := bl.bus.JetStream().DeleteStream(context.Background(), bl.bus.StreamName()); err != nil {
		b.Fatal(err)
	}
}

// publishBacklog preloads a simulator process with events, runs ingest
// until it published them all into stream, and stops both.
func publishBacklog(b *testing.B, bin string, env []string, natsURL, stream string, events int) *backlog {
	b.Helper()
	hubAddr := fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(b))
	env = append(slices.Clip(env), "WAYPOINT_HUB__URL="+hubAddr, "WAYPOINT_NATS__STREAM="+stream)
	dump := filepath.Join(b.TempDir(), "truth.jsonl")
	start := time.Now()
	dn := startWaypoint(b, bin, env, "devnet", "--listen", hubAddr, "--seed", "1",
		"--fids", strconv.Itoa(pipelineFIDs), "--preload", strconv.Itoa(events),
		"--duration", "1ns", "--dump-state", dump)
	last := lastEventIDs(b, dn, hubAddr)
	b.Logf("simulator preloaded %d events in %v", events, time.Since(start).Round(time.Second))

	bs, err := bus.Open(context.Background(), bus.Options{URL: natsURL, Stream: stream, Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bs.Close() })
	bl := &backlog{env: env, bus: bs}
	bl.ingest = ingestBacklog(b, bin, env, bs, last)
	bl.devnetRSS = peakRSS(b, dn.PID())
	if err := dn.Stop(time.Minute); err != nil {
		b.Fatalf("%v\n%s", err, dn.LogTail(4000))
	}
	bl.truth = readTruth(b, dump)
	b.Logf("ingest published %d messages into %s in %v (%.0f/s), peak RSS: ingest %.0f MB, simulator %.0f MB",
		bl.ingest.messages, stream, bl.ingest.took.Round(time.Millisecond), bl.ingest.rate(), mb(bl.ingest.rss), mb(bl.devnetRSS))
	return bl
}

// buildWaypoint builds this command into dir and returns the binary.
func buildWaypoint(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "waypoint")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startWaypoint runs `waypoint args...` with the configuration env; it is
// killed, by its PID, when the benchmark ends.
func startWaypoint(b *testing.B, bin string, env []string, args ...string) *testsupport.Daemon {
	b.Helper()
	d := testsupport.NewDaemon(b, "waypoint "+args[0], bin, args...)
	d.Env = processEnv(env)
	d.Start()
	return d
}

// processEnv is the test's environment without its WAYPOINT_ variables
// (the services' addresses, benchmark settings: unknown keys to the
// command), with env, the process's configuration, added.
func processEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WAYPOINT_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// lastEventIDs waits until the simulator serves, which it does once the
// preload is done, and returns the id of each data shard's last block.
func lastEventIDs(b *testing.B, dn *testsupport.Daemon, addr string) map[uint32]uint64 {
	b.Helper()
	h, err := hub.Dial(context.Background(), addr)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	deadline := time.Now().Add(10 * time.Minute)
	var info *pb.GetInfoResponse
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err = h.Raw().GetInfo(ctx, &pb.GetInfoRequest{})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-dn.Done():
			b.Fatalf("the simulator exited during its preload:\n%s", dn.LogTail(4000))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("the simulator did not serve within 10 minutes: %v", err)
		}
	}
	// The last event of a shard is then an empty block's BLOCK_CONFIRMED,
	// once its first block after the preload was cut: ingest is done when
	// it is in the stream.
	last := map[uint32]uint64{}
	for s := uint32(1); s <= info.NumShards; s++ {
		for {
			reverse, one := true, uint32(1)
			resp, err := h.Raw().GetEvents(context.Background(), &pb.EventsRequest{ShardIndex: &s, Reverse: &reverse, PageSize: &one})
			if err != nil {
				b.Fatalf("last event of shard %d: %v", s, err)
			}
			if len(resp.Events) == 1 && resp.Events[0].Type == pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED {
				last[s] = resp.Events[0].Id
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("shard %d cut no block after its preload", s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return last
}

// ingestRun is what the ingest process did.
type ingestRun struct {
	messages uint64 // in the stream once ingest stopped
	lastSeq  uint64
	took     time.Duration
	rss      uint64
}

func (r ingestRun) rate() float64 { return float64(r.messages) / r.took.Seconds() }

// ingestBacklog runs `waypoint ingest --from-id 0` until the stream holds
// the last block of every shard, and its time ends there; then until its
// checkpoints reached them too, and stops it. The stream then also holds
// the few empty blocks the simulator cut meanwhile.
func ingestBacklog(b *testing.B, bin string, env []string, bs *bus.Bus, last map[uint32]uint64) ingestRun {
	b.Helper()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(b))
	start := time.Now()
	in := startWaypoint(b, bin, append(slices.Clip(env), "WAYPOINT_METRICS__ADDR="+metricsAddr), "ingest", "--from-id", "0")
	var run ingestRun
	for {
		if run.took == 0 && blocksStored(b, bs, last) {
			run.took = time.Since(start)
		}
		if m, err := readMetrics(metricsAddr); err == nil && run.took > 0 && checkpointsAt(m, last) {
			break
		}
		select {
		case <-in.Done():
			b.Fatalf("ingest exited before publishing the backlog:\n%s", in.LogTail(4000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Since(start) > 15*time.Minute {
			b.Fatalf("ingest did not publish the backlog within 15 minutes:\n%s", in.LogTail(4000))
		}
	}
	run.rss = peakRSS(b, in.PID())
	if err := in.Stop(30 * time.Second); err != nil {
		b.Fatalf("%v\n%s", err, in.LogTail(4000))
	}
	si, err := bs.StreamInfo(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	run.messages, run.lastSeq = si.State.Msgs, si.State.LastSeq
	return run
}

// blocksStored reports whether the stream holds the blocks of last, the
// newest block event of each shard.
func blocksStored(b *testing.B, bs *bus.Bus, last map[uint32]uint64) bool {
	b.Helper()
	for s, id := range last {
		m, err := bs.Stream().GetLastMsgForSubject(context.Background(), bus.BlockSubject(s))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false
		}
		if err != nil {
			b.Fatal(err)
		}
		got, err := strconv.ParseUint(m.Header.Get(bus.HeaderEventID), 10, 64)
		if err != nil {
			b.Fatalf("block message %d of shard %d: event id: %v", m.Sequence, s, err)
		}
		if got < id {
			return false
		}
	}
	return true
}

// checkpointsAt reports whether ingest's metrics show every shard
// checkpointed at its last event.
func checkpointsAt(m map[string]float64, last map[uint32]uint64) bool {
	for s, id := range last {
		v, ok := m[fmt.Sprintf(`waypoint_checkpoint_event_id{shard="%d"}`, s)]
		if !ok || v < float64(id) {
			return false
		}
	}
	return true
}

// drain is what a sink's drain of a backlog took.
type drain struct {
	took time.Duration
	rss  uint64
	// cpu is the CPU time each part of the pipeline used over the drain,
	// by cpuParts name.
	cpu map[string]time.Duration
}

// cpuParts are the parts of the pipeline whose CPU time a drain reports:
// the sink process, the JetStream server, every Postgres process (the
// sink's connections, the indexer's, background workers) and Redis.
var cpuParts = []string{"sink", "nats", "postgres", "redis"}

// drainWithSink runs `waypoint sink --replicas replicas` into a fresh
// database until its group has acknowledged the whole backlog, and returns
// the time from its start to then, its peak RSS and the CPU time the
// pipeline's processes used meanwhile (natsPID is the JetStream server).
// The database must then equal the simulator's state.
func drainWithSink(b *testing.B, bin, redisPrefix string, bl *backlog, replicas, natsPID int) drain {
	b.Helper()
	ctx := context.Background()
	resetSinkGroup(b, bl.bus)
	dbURL := testsupport.PostgresURL(b)
	env := append(slices.Clip(bl.env),
		"WAYPOINT_DATABASE__URL="+dbURL,
		"WAYPOINT_REDIS__KEY_PREFIX="+redisPrefix+testsupport.Suffix()+":",
		fmt.Sprintf("WAYPOINT_METRICS__ADDR=127.0.0.1:%d", testsupport.FreePort(b)))
	migrate := exec.Command(bin, "migrate", "up")
	migrate.Env = processEnv(env)
	if out, err := migrate.CombinedOutput(); err != nil {
		b.Fatalf("waypoint migrate up: %v\n%s", err, out)
	}

	cpuBefore := testsupport.ReadCPU(b, map[string]int{"nats": natsPID})
	start := time.Now()
	args := []string{"sink", "--replicas", strconv.Itoa(replicas)}
	// WAYPOINT_BENCH_SINK_BATCH sets --batch-size and
	// WAYPOINT_BENCH_SINK_PULL sink.pull_size, to compare sizes.
	if n := os.Getenv("WAYPOINT_BENCH_SINK_BATCH"); n != "" {
		args = append(args, "--batch-size", n)
	}
	if n := os.Getenv("WAYPOINT_BENCH_SINK_PULL"); n != "" {
		env = append(env, "WAYPOINT_SINK__PULL_SIZE="+n)
	}
	sk := startWaypoint(b, bin, env, args...)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- bl.bus.WaitConsumed(wctx, sink.DefaultGroup, bl.ingest.lastSeq, 100*time.Millisecond)
	}()
	select {
	case err := <-consumed:
		if err != nil {
			b.Fatalf("%v\n%s", err, sk.LogTail(4000))
		}
	case <-sk.Done():
		b.Fatalf("the sink exited before draining the stream:\n%s", sk.LogTail(4000))
	}
	took := time.Since(start)
	rss := peakRSS(b, sk.PID())
	// The sink is new since cpuBefore: its whole CPU time counts.
	cpu := testsupport.ReadCPU(b, map[string]int{"nats": natsPID, "sink": sk.PID()}).Since(cpuBefore)
	if err := sk.Stop(30 * time.Second); err != nil {
		b.Fatalf("%v\n%s", err, sk.LogTail(4000))
	}

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var dead int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil {
		b.Fatal(err)
	}
	if dead != 0 {
		b.Fatalf("the sink dead-lettered %d of the simulator's valid messages", dead)
	}
	matchTruth(b, pool, bl.truth)
	return drain{took: took, rss: rss, cpu: cpu}
}

// resetSinkGroup deletes the sink group's consumers and member bucket, so
// the next sink starts from the stream's first message.
func resetSinkGroup(b *testing.B, bs *bus.Bus) {
	b.Helper()
	ctx := context.Background()
	js := bs.JetStream()
	for p := range bs.Partitions() {
		err := js.DeleteConsumer(ctx, bs.StreamName(), bus.ConsumerName(sink.DefaultGroup, p))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			b.Fatal(err)
		}
	}
	if err := js.DeleteKeyValue(ctx, sink.DefaultMemberBucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		b.Fatal(err)
	}
}

// readTruth reads the live items of pipelineStores, per fid and sorted,
// from a simulator's --dump-state file.
func readTruth(b *testing.B, path string) map[devnet.Store]map[uint64][]string {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatalf("simulator state dump: %v", err)
	}
	defer f.Close()
	truth := map[devnet.Store]map[uint64][]string{}
	for _, s := range pipelineStores {
		truth[s] = map[uint64][]string{}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var item struct {
			Store devnet.Store `json:"store"`
			Fid   uint64       `json:"fid"`
			Hash  string       `json:"hash"`
			Type  string       `json:"type"`
		}
		if err := json.Unmarshal(sc.Bytes(), &item); err != nil {
			b.Fatalf("simulator state dump: %v", err)
		}
		// Remove messages are stored beside the adds they removed; the
		// tables hold the adds, marked deleted.
		byFid, ok := truth[item.Store]
		if !ok || strings.Contains(item.Type, "REMOVE") {
			continue
		}
		byFid[item.Fid] = append(byFid[item.Fid], item.Hash)
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("simulator state dump: %v", err)
	}
	for _, byFid := range truth {
		for _, hashes := range byFid {
			slices.Sort(hashes)
		}
	}
	return truth
}

// matchTruth fails the benchmark unless the database's live rows of
// pipelineStores are the simulator's, fid by fid.
func matchTruth(b *testing.B, pool *pgxpool.Pool, truth map[devnet.Store]map[uint64][]string) {
	b.Helper()
	var counts []string
	for _, store := range pipelineStores {
		got, err := testsupport.LiveInPostgres(context.Background(), pool, store, pipelineFIDs)
		if err != nil {
			b.Fatal(err)
		}
		want, n, wrong := truth[store], 0, 0
		for fid := uint64(1); fid <= pipelineFIDs; fid++ {
			n += len(want[fid])
			if !slices.Equal(got[fid], want[fid]) {
				if wrong++; wrong <= 3 {
					b.Errorf("%s of fid %d: postgres has %d live, the simulator %d", store, fid, len(got[fid]), len(want[fid]))
				}
			}
		}
		if wrong > 0 {
			b.Fatalf("%s: %d fids differ from the simulator", store, wrong)
		}
		if n == 0 {
			b.Fatalf("%s: the simulator has none, the comparison proves nothing", store)
		}
		counts = append(counts, fmt.Sprintf("%d %s", n, store))
	}
	b.Logf("database equals the simulator: %s", strings.Join(counts, ", "))
}

func peakRSS(b *testing.B, pid int) uint64 {
	b.Helper()
	n, err := testsupport.PeakRSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func mb(n uint64) float64 { return float64(n) / (1 << 20) }
