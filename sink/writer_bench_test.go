package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/embedding"
	pb "github.com/waypointhq/waypoint/proto"
)

const benchBatch = 5000

var benchWords = []string{"farcaster", "frames", "onchain", "base", "degen", "gm", "builders", "shipping", "protocol",
	"channel", "warpcast", "ethereum", "summer", "music", "photo", "coffee", "weekend", "launch", "open", "source"}

// benchEvents returns one batch of the realistic mix: about 40% casts, 35%
// reactions, 15% links, 10% user data and verifications, with about 10% of
// all messages removes of earlier adds in the batch.
func benchEvents(b *testing.B, rng *rand.Rand, batch int, fidBase uint64) []*pb.HubEvent {
	evs := make([]*pb.HubEvent, 0, benchBatch)
	var casts, reactions, links []*pb.Message
	ts := uint32(100_000_000 + batch*10)
	for len(evs) < benchBatch {
		fid := fidBase + uint64(rng.IntN(2000))
		p := rng.IntN(100)
		var m *pb.Message
		switch {
		case p < 4 && len(casts) > 0:
			a := casts[rng.IntN(len(casts))]
			m = castRemove(b, a.Data.Fid, ts+1, a.Hash)
		case p < 7 && len(reactions) > 0:
			a := reactions[rng.IntN(len(reactions))]
			body := a.Data.GetReactionBody()
			m = reaction(b, true, a.Data.Fid, ts+1, body.Type, body.GetTargetCastId(), "")
		case p < 10 && len(links) > 0:
			a := links[rng.IntN(len(links))]
			m = link(b, true, a.Data.Fid, ts+1, "follow", a.Data.GetLinkBody().GetTargetFid())
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
		evs = append(evs, merge(m))
	}
	return evs
}

type benchData struct {
	batches [][]*pb.HubEvent
}

func (d *benchData) get(b *testing.B, i int) []*pb.HubEvent {
	for len(d.batches) <= i {
		rng := rand.New(rand.NewPCG(uint64(len(d.batches)), 42))
		d.batches = append(d.batches, benchEvents(b, rng, len(d.batches), uint64(len(d.batches))*10_000))
	}
	return d.batches[i]
}

// One data set for the whole run, so both benchmarks store the same rows.
var benchSet benchData

// BenchmarkRawCopyCeiling COPYs the rows the writer stages for each batch
// into plain tables of the same shape, with no keys or indexes: the cost of
// moving the bytes into Postgres, which the writer cannot beat.
func BenchmarkRawCopyCeiling(b *testing.B) {
	pool := migratedPool(b)
	ctx := context.Background()
	w := newTestWriter(b, pool, WithEmbedder(embedding.NewLocal(256)))
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	if err := ensureStaging(ctx, conn.Conn()); err != nil {
		b.Fatal(err)
	}
	for _, t := range []string{"messages", "casts", "cast_removes", "reactions", "links", "verifications", "user_data"} {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE ceil_%s (LIKE wp_stage_%s)`, t, t)); err != nil {
			b.Fatal(err)
		}
	}
	r := &rows{writeMessages: true}
	b.ReportAllocs()
	b.ResetTimer()
	var msgs int
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		evs := benchSet.get(b, i)
		r.reset()
		for _, ev := range evs {
			r.add(ev)
		}
		var res WriteResult
		if err := w.embed(ctx, r, &res); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range []error{
			copyRows[messageRow](ctx, tx, "ceil_messages", colsMessages, r.messages),
			copyRows[castRow](ctx, tx, "ceil_casts", colsCasts, r.casts),
			copyRows[castRemoveRow](ctx, tx, "ceil_cast_removes", colsCastRemoves, r.castRemoves),
			copyRows[reactionRow](ctx, tx, "ceil_reactions", colsReactions, r.reactions),
			copyRows[linkRow](ctx, tx, "ceil_links", colsLinks, r.links),
			copyRows[verificationRow](ctx, tx, "ceil_verifications", colsVerifications, r.verifications),
			copyRows[userDataRow](ctx, tx, "ceil_user_data", colsUserData, r.userData),
		} {
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		msgs += len(evs)
	}
	b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
}

// BenchmarkWriter stores fresh batches of the realistic mix through the
// whole writer: conversion, inline local embeddings, staging COPY and merge.
func BenchmarkWriter(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []WriterOption
		hnsw bool
	}{
		{"embeddings", []WriterOption{WithEmbedder(embedding.NewLocal(256))}, true},
		{"embeddings-no-hnsw", []WriterOption{WithEmbedder(embedding.NewLocal(256))}, false},
		{"no-embeddings", nil, true},
	} {
		b.Run(mode.name, func(b *testing.B) {
			pool := migratedPool(b)
			ctx := context.Background()
			if !mode.hnsw {
				if _, err := pool.Exec(ctx, `DROP INDEX casts_embedding_idx`); err != nil {
					b.Fatal(err)
				}
			}
			w := newTestWriter(b, pool, mode.opts...)
			// Warm the connection's staging tables and statement cache.
			if _, err := w.Write(ctx, benchSet.get(b, 0)[:10]); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var msgs int
			var elapsed time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				evs := benchSet.get(b, i)
				b.StartTimer()
				start := time.Now()
				res, err := w.Write(ctx, evs)
				if err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start)
				if res.DeadLetters != 0 {
					b.Fatalf("%d dead letters", res.DeadLetters)
				}
				msgs += len(evs)
			}
			b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
		})
	}
}
