package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/embedding"
	pb "github.com/waypointhq/waypoint/proto"
)

const benchBatch = 5000

var benchWords = []string{"farcaster", "frames", "onchain", "base", "degen", "gm", "builders", "shipping", "protocol",
	"channel", "warpcast", "ethereum", "summer", "music", "photo", "coffee", "weekend", "launch", "open", "source"}

// benchEvents returns one batch of the realistic mix: about 40% casts, 35%
// reactions, 15% links, 10% user data and verifications, with about 10% of
// all messages removes of earlier adds in the batch. As a hub emits them, a
// remove's merge event lists the add it deletes.
func benchEvents(b testing.TB, rng *rand.Rand, batch int, fidBase uint64) []*pb.HubEvent {
	evs := make([]*pb.HubEvent, 0, benchBatch)
	var casts, reactions, links []*pb.Message
	ts := uint32(100_000_000 + batch*10)
	for len(evs) < benchBatch {
		fid := fidBase + uint64(rng.IntN(2000))
		p := rng.IntN(100)
		var m *pb.Message
		var deleted *pb.Message
		switch {
		case p < 4 && len(casts) > 0:
			a := casts[rng.IntN(len(casts))]
			m, deleted = castRemove(b, a.Data.Fid, ts+1, a.Hash), a
		case p < 7 && len(reactions) > 0:
			a := reactions[rng.IntN(len(reactions))]
			body := a.Data.GetReactionBody()
			m, deleted = reaction(b, true, a.Data.Fid, ts+1, body.Type, body.GetTargetCastId(), ""), a
		case p < 10 && len(links) > 0:
			a := links[rng.IntN(len(links))]
			m, deleted = link(b, true, a.Data.Fid, ts+1, "follow", a.Data.GetLinkBody().GetTargetFid()), a
		case p < 46:
			n := 4 + rng.IntN(20)
			text := make([]byte, 0, 160)
			for i := range n {
				if i > 0 {
					text = append(text, ' ')
				}
				text = append(text, benchWords[rng.IntN(len(benchWords))]...)
			}
			var parent *pb.CastId
			if len(casts) > 0 && rng.IntN(3) == 0 {
				parent = castID(casts[rng.IntN(len(casts))])
			}
			m = castAdd(b, fid, ts, string(text), parent)
			casts = append(casts, m)
		case p < 78:
			var target *pb.CastId
			if len(casts) > 0 {
				target = castID(casts[rng.IntN(len(casts))])
			} else {
				target = &pb.CastId{Fid: 1, Hash: make([]byte, 20)}
			}
			m = reaction(b, false, fid, ts, pb.ReactionType(1+rng.IntN(2)), target, "")
			reactions = append(reactions, m)
		case p < 91:
			m = link(b, false, fid, ts, "follow", uint64(rng.IntN(1_000_000)))
			links = append(links, m)
		case p < 96:
			m = userData(b, fid, ts+uint32(rng.IntN(1000)), pb.UserDataType(1+rng.IntN(3)), fmt.Sprint("value ", rng.IntN(1e6)))
		default:
			addr := make([]byte, 20)
			for i := range addr {
				addr[i] = byte(rng.IntN(256))
			}
			m = verification(b, false, fid, ts, addr)
		}
		if deleted != nil {
			evs = append(evs, merge(m, deleted))
		} else {
			evs = append(evs, merge(m))
		}
	}
	return evs
}

type benchData struct {
	batches [][]*pb.HubEvent
}

func (d *benchData) get(b testing.TB, i int) []*pb.HubEvent {
	for len(d.batches) <= i {
		rng := rand.New(rand.NewPCG(uint64(len(d.batches)), 42))
		d.batches = append(d.batches, benchEvents(b, rng, len(d.batches), uint64(len(d.batches))*10_000))
	}
	return d.batches[i]
}

// One data set for the whole run, so every benchmark stores the same rows.
var benchSet benchData

// ceiling COPYs a batch's rows, as the writer stages them, into plain
// tables with no keys or indexes: the cost of moving the bytes into
// Postgres, with the writer's own encoder, which the writer cannot beat.
type ceiling struct {
	conn    *pgxpool.Conn
	targets [numSources]copyTarget
	queue   copyTarget
}

func newCeiling(b testing.TB, pool *pgxpool.Pool) *ceiling {
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Release)
	c := &ceiling{conn: conn}
	for _, s := range []*source{srcMarks, srcMessages, srcCasts, srcCastRemoves, srcReactions, srcLinks, srcCompacts,
		srcVerifications, srcUserData, srcProofs, srcLends, srcOnchain} {
		var defs, names []string
		for _, col := range s.cols {
			defs = append(defs, col.name+" "+col.typ)
			names = append(names, col.name)
		}
		name := "ceil_" + s.name
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (%s)`, name, strings.Join(defs, ", "))); err != nil {
			b.Fatal(err)
		}
		c.targets[s.id] = newCopyTarget(name, names)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE ceil_queue (LIKE cast_embedding_queue)`); err != nil {
		b.Fatal(err)
	}
	c.queue = newCopyTarget("ceil_queue", []string{"hash", "fid", "embedding"})
	return c
}

// stage converts and embeds a batch as the writer does.
func stage(b testing.TB, w *Writer, r *rows, evs []*pb.HubEvent) {
	r.reset()
	r.writeMessages = true
	for _, ev := range evs {
		r.add(ev)
	}
	r.resolveRoots()
	if _, err := w.embed(context.Background(), r); err != nil {
		b.Fatal(err)
	}
}

// copy stores r in one transaction and returns how long it took.
func (c *ceiling) copy(b testing.TB, r *rows) time.Duration {
	ctx := context.Background()
	start := time.Now()
	tx, err := c.conn.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pg, e := c.conn.Conn().PgConn(), &r.enc
	for _, err := range []error{
		copyRows[markRow](ctx, pg, e, c.targets[idMarks], r.marks),
		copyRows[messageRow](ctx, pg, e, c.targets[idMessages], r.messages),
		copyRows[castRow](ctx, pg, e, c.targets[idCasts], r.casts),
		copyRows[embeddingRow](ctx, pg, e, c.queue, r.embeddings),
		copyRows[castRemoveRow](ctx, pg, e, c.targets[idCastRemoves], r.castRemoves),
		copyRows[reactionRow](ctx, pg, e, c.targets[idReactions], r.reactions),
		copyRows[linkRow](ctx, pg, e, c.targets[idLinks], r.links),
		copyRows[compactRow](ctx, pg, e, c.targets[idCompacts], r.compacts),
		copyRows[verificationRow](ctx, pg, e, c.targets[idVerifications], r.verifications),
		copyRows[userDataRow](ctx, pg, e, c.targets[idUserData], r.userData),
		copyRows[proofRow](ctx, pg, e, c.targets[idProofs], r.proofs),
		copyRows[lendRow](ctx, pg, e, c.targets[idLends], r.lends),
		copyRows[onchainRow](ctx, pg, e, c.targets[idOnchain], r.onchain),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkRawCopyCeiling measures the ceiling alone; conversion and
// embedding are not timed.
func BenchmarkRawCopyCeiling(b *testing.B) {
	pool := migratedPool(b)
	w := newTestWriter(b, pool, WithEmbedder(embedding.NewLocal(256)))
	c := newCeiling(b, pool)
	r := &rows{}
	b.ResetTimer()
	var msgs int
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		evs := benchSet.get(b, i)
		b.StopTimer()
		stage(b, w, r, evs)
		b.StartTimer()
		elapsed += c.copy(b, r)
		msgs += len(evs)
	}
	b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
}

// writeBench times w.Write over batches from benchSet and returns the
// elapsed time, messages and heap allocations it took.
func writeBench(b *testing.B, w *Writer, i int) (time.Duration, int, uint64) {
	ctx := context.Background()
	evs := benchSet.get(b, i)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	res, err := w.Write(ctx, evs)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		b.Fatal(err)
	}
	if res.DeadLetters != 0 {
		b.Fatalf("%d dead letters", res.DeadLetters)
	}
	return elapsed, len(evs), after.Mallocs - before.Mallocs
}

// writeConcurrently stores batches 0..b.N-1 with n goroutines sharing w,
// each taking the next batch, and returns the messages, the wall time and
// the heap allocations it took.
func writeConcurrently(b *testing.B, w *Writer, n int) (int, time.Duration, uint64) {
	var next atomic.Int64
	var msgs atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				evs := benchSet.batches[i]
				res, err := w.Write(context.Background(), evs)
				if err == nil && res.DeadLetters != 0 {
					err = fmt.Errorf("%d dead letters", res.DeadLetters)
				}
				if err != nil {
					errs <- err
					return
				}
				msgs.Add(int64(len(evs)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return int(msgs.Load()), elapsed, after.Mallocs - before.Mallocs
}

// warm fills the connection's statement cache and the writer's buffers
// with messages of accounts the measured batches never use: a warm-up that
// stored some of the first batch's messages would make that batch a
// redelivery, which takes the merge's slower path.
func warm(b *testing.B, w *Writer) {
	evs := benchEvents(b, rand.New(rand.NewPCG(1<<32, 42)), 0, 1<<40)
	if _, err := w.Write(context.Background(), evs[:10]); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWriter stores fresh batches of the realistic mix through the
// whole writer: conversion, inline local embeddings (queued for the
// indexer), direct COPY and merge. embeddings+indexer runs RunIndexer
// beside it, as a sink process does, competing for the same cores;
// embeddings-2-writers runs two writers at once, as --replicas 2 does, and
// reports their combined rate.
func BenchmarkWriter(b *testing.B) {
	for _, mode := range []struct {
		name    string
		opts    []WriterOption
		indexer bool
		writers int
	}{
		{"embeddings", []WriterOption{WithEmbedder(embedding.NewLocal(256))}, false, 1},
		{"embeddings+indexer", []WriterOption{WithEmbedder(embedding.NewLocal(256))}, true, 1},
		{"embeddings-2-writers", []WriterOption{WithEmbedder(embedding.NewLocal(256))}, false, 2},
		{"no-embeddings", nil, false, 1},
	} {
		b.Run(mode.name, func(b *testing.B) {
			pool := migratedPool(b)
			w := newTestWriter(b, pool, mode.opts...)
			warm(b, w)
			if mode.indexer {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				go func() { done <- RunIndexer(ctx, pool, IndexerOptions{Interval: 10 * time.Millisecond}) }()
				b.Cleanup(func() { cancel(); <-done })
			}
			if mode.writers > 1 {
				for i := 0; i < b.N; i++ {
					benchSet.get(b, i) // generated up front: benchSet is not safe for concurrent use
				}
				b.ResetTimer()
				msgs, elapsed, allocs := writeConcurrently(b, w, mode.writers)
				b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64(allocs)/float64(msgs), "allocs/msg")
				return
			}
			b.ResetTimer()
			var msgs int
			var elapsed time.Duration
			var allocs uint64
			for i := 0; i < b.N; i++ {
				d, n, a := writeBench(b, w, i)
				elapsed, msgs, allocs = elapsed+d, msgs+n, allocs+a
			}
			b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(allocs)/float64(msgs), "allocs/msg")
		})
	}
}

// BenchmarkWriterVsCeiling runs the ceiling and the writer with inline
// embeddings on the same batches in one process, alternating which goes
// first, so that load from other work on the machine falls on both alike,
// and reports both rates and writer/ceiling as ratio.
func BenchmarkWriterVsCeiling(b *testing.B) {
	ceilPool := migratedPool(b)
	pool := migratedPool(b)
	w := newTestWriter(b, pool, WithEmbedder(embedding.NewLocal(256)))
	c := newCeiling(b, ceilPool)
	warm(b, w)
	r := &rows{}
	b.ResetTimer()
	var msgs int
	var ceil, write time.Duration
	var allocs uint64
	for i := 0; i < b.N; i++ {
		runCeil := func() {
			b.StopTimer()
			stage(b, w, r, benchSet.get(b, i))
			b.StartTimer()
			ceil += c.copy(b, r)
		}
		if i%2 == 1 {
			runCeil()
		}
		d, n, a := writeBench(b, w, i)
		write, msgs, allocs = write+d, msgs+n, allocs+a
		if i%2 == 0 {
			runCeil()
		}
	}
	ceilRate := float64(msgs) / ceil.Seconds()
	writeRate := float64(msgs) / write.Seconds()
	b.ReportMetric(ceilRate, "ceiling-msgs/s")
	b.ReportMetric(writeRate, "writer-msgs/s")
	b.ReportMetric(writeRate/ceilRate, "ratio")
	b.ReportMetric(float64(allocs)/float64(msgs), "allocs/msg")
}

// BenchmarkIndexer measures how fast IndexEmbeddings moves queued
// embeddings into the HNSW index; the writes that queue them are not timed.
func BenchmarkIndexer(b *testing.B) {
	pool := migratedPool(b)
	ctx := context.Background()
	w := newTestWriter(b, pool, WithEmbedder(embedding.NewLocal(256)))
	b.ResetTimer()
	var indexed int
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := w.Write(ctx, benchSet.get(b, i)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		n, err := IndexEmbeddings(ctx, pool, 0)
		if err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		indexed += n
	}
	var total int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cast_embeddings`).Scan(&total); err != nil {
		b.Fatal(err)
	}
	if total != indexed || indexed == 0 {
		b.Fatalf("indexed %d, cast_embeddings holds %d", indexed, total)
	}
	b.ReportMetric(float64(indexed)/elapsed.Seconds(), "rows/s")
}

// BenchmarkCopyIndexCost COPYs each batch's rows into the ceiling's plain
// tables and, in the same run, into copies of the live tables with every
// index they have (the live-key indexes made non-unique, since a key's
// versions are not resolved here): what maintaining the indexes costs by
// itself, with no lookups or conflict handling. indexed/ceiling bounds what
// any writer keeping those indexes can reach.
func BenchmarkCopyIndexCost(b *testing.B) {
	pool := migratedPool(b)
	ctx := context.Background()
	w := newTestWriter(b, pool, WithEmbedder(embedding.NewLocal(256)))
	c := newCeiling(b, pool)
	conn := c.conn
	indexed := func(t copyTarget) copyTarget {
		return copyTarget{"indexed_" + t.table, strings.Replace(t.sql, "COPY "+t.table+" ", "COPY indexed_"+t.table+" ", 1)}
	}
	keyed := func(table string, s *source) copyTarget {
		var cols []string
		for _, col := range s.cols {
			name := col.name
			if name == "ts" {
				name = `"timestamp"`
			}
			cols = append(cols, name)
		}
		return indexed(newCopyTarget(table, cols))
	}
	for _, table := range []string{"messages", "casts", "cast_embedding_queue", "reactions", "links", "verifications", "user_data"} {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE indexed_%[1]s (LIKE %[1]s INCLUDING DEFAULTS)`, table)); err != nil {
			b.Fatal(err)
		}
		rows, err := conn.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1`, table)
		if err != nil {
			b.Fatal(err)
		}
		defs := map[string]string{}
		for rows.Next() {
			var name, def string
			if err := rows.Scan(&name, &def); err != nil {
				b.Fatal(err)
			}
			defs[name] = def
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		for name, def := range defs {
			def = strings.Replace(def, " "+name+" ON public."+table+" ", " indexed_"+name+" ON indexed_"+table+" ", 1)
			if strings.HasSuffix(name, "_live_key") {
				def = strings.Replace(strings.Replace(def, "UNIQUE ", "", 1), " NULLS NOT DISTINCT", "", 1)
			}
			if _, err := conn.Exec(ctx, def); err != nil {
				b.Fatal(err)
			}
		}
	}
	reactions, links := keyed("reactions", srcReactions), keyed("links", srcLinks)
	verifications, userData := keyed("verifications", srcVerifications), keyed("user_data", srcUserData)
	pg := conn.Conn().PgConn()
	copyIndexed := func(r *rows) time.Duration {
		start := time.Now()
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		e := &r.enc
		for _, t := range []struct {
			target copyTarget
			encode func(int) // appends row i, for i < n
			n      int
		}{
			{indexed(copyMessages), func(i int) { r.messages[i].encodeStored(e) }, len(r.messages)},
			{indexed(copyCasts), func(i int) { r.casts[i].encodeStored(e) }, len(r.casts)},
		} {
			e.begin(false, 0)
			for i := range t.n {
				t.encode(i)
			}
			if _, err := e.send(ctx, pg, t.target.sql); err != nil {
				b.Fatal(err)
			}
		}
		for _, err := range []error{
			copyRows[embeddingRow](ctx, pg, e, indexed(copyEmbeddings), r.embeddings),
			copyRows[reactionRow](ctx, pg, e, reactions, r.reactions),
			copyRows[linkRow](ctx, pg, e, links, r.links),
			copyRows[verificationRow](ctx, pg, e, verifications, r.verifications),
			copyRows[userDataRow](ctx, pg, e, userData, r.userData),
			// Marks and cast removes have no table of the same shape; they
			// go where the ceiling puts them.
			copyRows[markRow](ctx, pg, e, c.targets[idMarks], r.marks),
			copyRows[castRemoveRow](ctx, pg, e, c.targets[idCastRemoves], r.castRemoves),
		} {
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	r := &rows{}
	b.ResetTimer()
	var msgs int
	var ceil, idx time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		stage(b, w, r, benchSet.get(b, i))
		b.StartTimer()
		if i%2 == 0 {
			ceil += c.copy(b, r)
			idx += copyIndexed(r)
		} else {
			idx += copyIndexed(r)
			ceil += c.copy(b, r)
		}
		msgs += len(benchSet.get(b, i))
	}
	b.ReportMetric(float64(msgs)/ceil.Seconds(), "ceiling-msgs/s")
	b.ReportMetric(float64(msgs)/idx.Seconds(), "indexed-msgs/s")
	b.ReportMetric(ceil.Seconds()/idx.Seconds(), "ratio")
}
