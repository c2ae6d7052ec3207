package sink

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/embedding"
	pb "github.com/waypointhq/waypoint/proto"
)

type expect struct {
	table string
	msg   *pb.Message
	live  bool
}

// TestWriterRules runs each conflict rule and deletion cause, delivering the
// events in order, in reverse, and one batch at a time, since the result must
// not depend on that.
func TestWriterRules(t *testing.T) {
	pool := migratedPool(t)
	var fid uint64 = 100
	next := func() uint64 { fid++; return fid }
	type scenario struct {
		name   string
		events []*pb.HubEvent
		want   []expect
	}
	var cases []func(t *testing.T) scenario
	cases = append(cases,
		func(t *testing.T) scenario {
			f := next()
			a := castAdd(t, f, 10, "hello", nil)
			r := castRemove(t, f, 5, a.Hash) // older than the add: remove still wins
			return scenario{"cast remove wins regardless of timestamp", []*pb.HubEvent{merge(a), merge(r, a)},
				[]expect{{"casts", a, false}}}
		},
		func(t *testing.T) scenario {
			f := next()
			a := castAdd(t, f, 10, "kept", nil)
			b := castAdd(t, f, 11, "pruned", nil)
			return scenario{"cast prune", []*pb.HubEvent{merge(a), merge(b), prune(b)},
				[]expect{{"casts", a, true}, {"casts", b, false}}}
		},
		func(t *testing.T) scenario {
			f := next()
			a := castAdd(t, f, 10, "revoked", nil)
			return scenario{"cast revoke", []*pb.HubEvent{merge(a), revoke(a)}, []expect{{"casts", a, false}}}
		},
		func(t *testing.T) scenario {
			f := next()
			target := &pb.CastId{Fid: 1, Hash: bytes.Repeat([]byte{7}, 20)}
			a := reaction(t, false, f, 10, pb.ReactionType_REACTION_TYPE_LIKE, target, "")
			r := reaction(t, true, f, 11, pb.ReactionType_REACTION_TYPE_LIKE, target, "")
			a2 := reaction(t, false, f, 12, pb.ReactionType_REACTION_TYPE_LIKE, target, "")
			other := reaction(t, false, f, 10, pb.ReactionType_REACTION_TYPE_RECAST, target, "")
			return scenario{"reaction last write wins", []*pb.HubEvent{merge(a), merge(r, a), merge(a2, r), merge(other)},
				[]expect{{"reactions", a2, true}, {"reactions", other, true}}}
		},
		func(t *testing.T) scenario {
			f := next()
			a := reaction(t, false, f, 10, pb.ReactionType_REACTION_TYPE_LIKE, nil, "https://example.com/x")
			r := reaction(t, true, f, 10, pb.ReactionType_REACTION_TYPE_LIKE, nil, "https://example.com/x")
			return scenario{"reaction tie: remove beats add", []*pb.HubEvent{merge(a), merge(r, a)},
				[]expect{{"reactions", r, false}}}
		},
		func(t *testing.T) scenario {
			f := next()
			a := link(t, false, f, 10, "follow", 5)
			b := link(t, false, f, 11, "follow", 5)
			r := link(t, true, f, 9, "follow", 5) // older remove loses
			return scenario{"link newer add beats older remove", []*pb.HubEvent{merge(a), merge(b, a), merge(r)},
				[]expect{{"links", b, true}}}
		},
		func(t *testing.T) scenario {
			f := next()
			keep := link(t, false, f, 10, "follow", 1)
			drop := link(t, false, f, 10, "follow", 2)
			newer := link(t, false, f, 30, "follow", 3)
			other := link(t, false, f, 10, "mute", 2)
			c := linkCompact(t, f, 20, "follow", []uint64{1})
			return scenario{"link compact state", []*pb.HubEvent{merge(keep), merge(drop), merge(newer), merge(other), merge(c)},
				[]expect{{"links", keep, true}, {"links", drop, false}, {"links", newer, true}, {"links", other, true}}}
		},
		func(t *testing.T) scenario {
			f := next()
			// The node sweeps a link as old as the state when it came first
			// (its merge event says so) and keeps one merged after it.
			tie := link(t, false, f, 20, "follow", 2)
			c := linkCompact(t, f, 20, "follow", []uint64{1})
			tieAfter := link(t, false, f, 20, "follow", 3)
			return scenario{"link compact state at a link's timestamp", []*pb.HubEvent{merge(tie), merge(c, tie), merge(tieAfter)},
				[]expect{{"links", tie, false}, {"links", tieAfter, true}}}
		},
		func(t *testing.T) scenario {
			f := next()
			// Only the newest state rejects: an older link it lists, merged
			// after it, stays although the state it replaced omits it.
			c1 := linkCompact(t, f, 20, "follow", nil)
			c2 := linkCompact(t, f, 30, "follow", []uint64{5})
			l := link(t, false, f, 10, "follow", 5)
			return scenario{"superseded link compact state", []*pb.HubEvent{merge(c1), merge(c2, c1), merge(l)},
				[]expect{{"links", l, true}}}
		},
		func(t *testing.T) scenario {
			f := next()
			addr := bytes.Repeat([]byte{0xab}, 20)
			a := verification(t, false, f, 10, addr)
			r := verification(t, true, f, 11, addr)
			addr2 := bytes.Repeat([]byte{0xcd}, 20)
			b := verification(t, false, f, 10, addr2)
			return scenario{"verification remove", []*pb.HubEvent{merge(a), merge(r, a), merge(b)},
				[]expect{{"verifications", r, false}, {"verifications", b, true}}}
		},
		func(t *testing.T) scenario {
			f := next()
			u1 := userData(t, f, 10, pb.UserDataType_USER_DATA_TYPE_DISPLAY, "old")
			u2 := userData(t, f, 20, pb.UserDataType_USER_DATA_TYPE_DISPLAY, "new")
			n := userData(t, f, 20, pb.UserDataType_USER_DATA_TYPE_USERNAME, "alice")
			return scenario{"user data last write wins and revoke", []*pb.HubEvent{merge(u1), merge(u2, u1), merge(n), revoke(n)},
				[]expect{{"user_data", u2, true}, {"user_data", n, false}}}
		},
		func(t *testing.T) scenario {
			f := next()
			l := lendStorage(t, f, 10, f+1, 3)
			p := lendStorage(t, f, 11, f+2, 1)
			return scenario{"lend storage and prune", []*pb.HubEvent{merge(l), merge(p), prune(p)},
				[]expect{{"lend_storage", l, true}, {"lend_storage", p, false}}}
		},
	)
	for i, mk := range cases {
		sc := mk(t)
		for _, order := range []string{"forward", "reverse", "single"} {
			t.Run(sc.name+"/"+order, func(t *testing.T) {
				// Each delivery order gets its own fids: rebuild the scenario.
				if order != "forward" {
					sc = cases[i](t)
				}
				w := newTestWriter(t, pool)
				evs := append([]*pb.HubEvent(nil), sc.events...)
				switch order {
				case "forward":
					mustWrite(t, w, evs...)
				case "reverse":
					for l, r := 0, len(evs)-1; l < r; l, r = l+1, r-1 {
						evs[l], evs[r] = evs[r], evs[l]
					}
					mustWrite(t, w, evs...)
				case "single":
					for j := len(evs) - 1; j >= 0; j-- {
						mustWrite(t, w, evs[j])
					}
				}
				// A second delivery changes nothing.
				mustWrite(t, w, evs...)
				for _, e := range sc.want {
					if got := isLive(t, pool, e.table, e.msg.Hash); got != e.live {
						t.Errorf("%s row of %v at %d: live = %v, want %v", e.table, e.msg.Data.Type, e.msg.Data.Timestamp, got, e.live)
					}
				}
			})
		}
	}
}

func TestWriterCastRemoveBeforeAdd(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	a := castAdd(t, 7, 10, "later", nil)
	r := castRemove(t, 7, 12, a.Hash)
	mustWrite(t, w, merge(r))
	var text *string
	var deleted bool
	if err := pool.QueryRow(context.Background(), `SELECT text, deleted_at IS NOT NULL FROM casts WHERE hash = $1`, a.Hash).Scan(&text, &deleted); err != nil {
		t.Fatalf("tombstone: %v", err)
	}
	if text != nil || !deleted {
		t.Fatalf("tombstone: text=%v deleted=%v, want NULL text and deleted", text, deleted)
	}
	mustWrite(t, w, merge(a))
	if err := pool.QueryRow(context.Background(), `SELECT text, deleted_at IS NOT NULL FROM casts WHERE hash = $1`, a.Hash).Scan(&text, &deleted); err != nil {
		t.Fatal(err)
	}
	if text == nil || *text != "later" || !deleted {
		t.Fatalf("add after remove: text=%v deleted=%v, want the text stored and still deleted", text, deleted)
	}
}

func TestWriterPruneBeforeMessage(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	a := reaction(t, false, 8, 10, pb.ReactionType_REACTION_TYPE_LIKE, nil, "https://a")
	// The prune event carries the message; deliver it alone first.
	mustWrite(t, w, prune(a))
	mustWrite(t, w, merge(a))
	var pruned, deleted bool
	if err := pool.QueryRow(context.Background(), `SELECT pruned_at IS NOT NULL, deleted_at IS NOT NULL FROM reactions WHERE hash = $1`, a.Hash).Scan(&pruned, &deleted); err != nil {
		t.Fatal(err)
	}
	if !pruned || !deleted {
		t.Fatalf("pruned=%v deleted=%v, want both", pruned, deleted)
	}
	if err := pool.QueryRow(context.Background(), `SELECT pruned_at IS NOT NULL FROM messages WHERE hash = $1`, a.Hash).Scan(&pruned); err != nil || !pruned {
		t.Fatalf("messages row pruned = %v (%v)", pruned, err)
	}
}

func TestWriterUsernameProofs(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	a1 := fname("alice", 5, 100)
	a2 := fname("alice", 6, 200)
	b1 := fname("bob", 7, 100)
	b0 := fname("bob", 0, 150) // released
	// Newest first: order must not matter.
	mustWrite(t, w, proofEvent(b0, nil), proofEvent(a2, a1))
	mustWrite(t, w, proofEvent(a1, nil), proofEvent(b1, nil))
	rows, err := pool.Query(ctx, `SELECT username, fid FROM username_proofs WHERE deleted_at IS NULL ORDER BY username`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var n string
		var f int64
		if err := rows.Scan(&n, &f); err != nil {
			t.Fatal(err)
		}
		got = append(got, n+":"+string(rune('0'+f)))
	}
	if strings.Join(got, ",") != "alice:6" {
		t.Fatalf("live proofs = %v, want alice:6", got)
	}
}

func TestWriterThreadRoots(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	root := sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 1, Timestamp: 1,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "root", Parent: &pb.CastAddBody_ParentUrl{ParentUrl: "chain://channel"}}}})
	c1 := castAdd(t, 2, 2, "reply", castID(root))
	c2 := castAdd(t, 3, 3, "reply to reply", castID(c1))
	c3 := castAdd(t, 4, 4, "deeper", castID(c2))
	// Deepest first, across batches, and one batch holding a middle link.
	mustWrite(t, w, merge(c3))
	mustWrite(t, w, merge(c1))
	mustWrite(t, w, merge(c2), merge(root))
	for _, c := range []*pb.Message{c1, c2, c3} {
		var rf *int64
		var rh []byte
		var ru *string
		if err := pool.QueryRow(ctx, `SELECT root_parent_fid, root_parent_hash, root_parent_url FROM casts WHERE hash = $1`, c.Hash).Scan(&rf, &rh, &ru); err != nil {
			t.Fatal(err)
		}
		if rf == nil || *rf != 1 || !bytes.Equal(rh, root.Hash) || ru == nil || *ru != "chain://channel" {
			t.Errorf("cast %q: root = (%v, %x, %v), want (1, %x, chain://channel)", c.Data.GetCastAddBody().Text, rf, rh, ru, root.Hash)
		}
	}
	var rh []byte
	var ru *string
	if err := pool.QueryRow(ctx, `SELECT root_parent_hash, root_parent_url FROM casts WHERE hash = $1`, root.Hash).Scan(&rh, &ru); err != nil {
		t.Fatal(err)
	}
	if rh != nil || ru == nil || *ru != "chain://channel" {
		t.Errorf("root cast: root_parent_hash=%x url=%v, want NULL and its channel", rh, ru)
	}
}

func TestWriterOnchainAndFids(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	custody1 := bytes.Repeat([]byte{1}, 20)
	custody2 := bytes.Repeat([]byte{2}, 20)
	recovery := bytes.Repeat([]byte{3}, 20)
	recovery2 := bytes.Repeat([]byte{4}, 20)
	evs := []*pb.HubEvent{
		onchain(9, 10, 0, 1, &pb.IdRegisterEventBody{To: custody1, EventType: pb.IdRegisterEventType_ID_REGISTER_EVENT_TYPE_REGISTER, RecoveryAddress: recovery}),
		onchain(9, 20, 1, 2, &pb.IdRegisterEventBody{To: custody2, From: custody1, EventType: pb.IdRegisterEventType_ID_REGISTER_EVENT_TYPE_TRANSFER}),
		onchain(9, 30, 0, 3, &pb.IdRegisterEventBody{EventType: pb.IdRegisterEventType_ID_REGISTER_EVENT_TYPE_CHANGE_RECOVERY, RecoveryAddress: recovery2}),
		onchain(9, 11, 2, 4, &pb.StorageRentEventBody{Payer: custody1, Units: 2, Expiry: 4_000_000_000}),
		onchain(9, 12, 0, 5, &pb.StorageRentEventBody{Payer: custody1, Units: 1, Expiry: 1}), // expired
		onchain(9, 13, 0, 6, &pb.TierPurchaseBody{TierType: pb.TierType_Pro, ForDays: 30, Payer: custody1}),
		onchain(9, 14, 0, 7, &pb.SignerEventBody{Key: bytes.Repeat([]byte{9}, 32), KeyType: 1, EventType: pb.SignerEventType_SIGNER_EVENT_TYPE_ADD}),
		onchain(9, 15, 0, 8, &pb.SignerMigratedEventBody{MigratedAt: 5}),
	}
	// Newest first, then everything again (idempotent by tx hash and log index).
	for i := len(evs) - 1; i >= 0; i-- {
		mustWrite(t, w, evs[i])
	}
	mustWrite(t, w, evs...)
	var custody, rec []byte
	var units int64
	var tier int16
	if err := pool.QueryRow(ctx, `SELECT custody_address, recovery_address, storage_units, tier FROM fids WHERE fid = 9`).Scan(&custody, &rec, &units, &tier); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(custody, custody2) || !bytes.Equal(rec, recovery2) || units != 2 || tier != 1 {
		t.Errorf("fids row = custody %x recovery %x units %d tier %d", custody, rec, units, tier)
	}
	for table, want := range map[string]int{"onchain_events": 8, "id_register_events": 3, "storage_rent_events": 2, "tier_purchases": 1, "signer_events": 1, "signer_migrated_events": 1} {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil || n != want {
			t.Errorf("%s has %d rows (%v), want %d", table, n, err, want)
		}
	}
}

func TestWriterHostileText(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool, WithEmbedder(embedding.NewLocal(256)))
	ctx := context.Background()
	bad := "nul\x00byte and bad utf8 \xff\xfe end"
	long := strings.Repeat("long cast text ", 2000)
	c := sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 11, Timestamp: 1,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: bad,
			Embeds: []*pb.Embed{{Embed: &pb.Embed_Url{Url: "https://x/\x00\"q\"\n"}}}}}})
	l := castAdd(t, 11, 2, long, nil)
	u := userData(t, 11, 3, pb.UserDataType_USER_DATA_TYPE_BIO, "bio\x00\xc3")
	res := mustWrite(t, w, merge(c), merge(l), merge(u))
	if res.DeadLetters != 0 {
		var r, d string
		_ = pool.QueryRow(ctx, `SELECT reason, detail FROM dead_letters`).Scan(&r, &d)
		t.Fatalf("dead letters = %d, want 0: %s %s", res.DeadLetters, r, d)
	}
	var text, embeds string
	if err := pool.QueryRow(ctx, `SELECT text, embeds::text FROM casts WHERE hash = $1`, c.Hash).Scan(&text, &embeds); err != nil {
		t.Fatal(err)
	}
	if text != "nulbyte and bad utf8 \uFFFD end" {
		t.Errorf("text = %q", text)
	}
	if embeds != `[{"url": "https://x/\"q\"\n"}]` {
		t.Errorf("embeds = %s", embeds)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT length(text) FROM casts WHERE hash = $1`, l.Hash).Scan(&n); err != nil || n != len(long) {
		t.Errorf("long text length = %d (%v), want %d", n, err, len(long))
	}
	var value string
	if err := pool.QueryRow(ctx, `SELECT value FROM user_data WHERE hash = $1`, u.Hash).Scan(&value); err != nil || value != "bio\uFFFD" {
		t.Errorf("user data value = %q (%v)", value, err)
	}
	var raw []byte
	if err := pool.QueryRow(ctx, `SELECT raw FROM messages WHERE hash = $1`, c.Hash).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var back pb.Message
	if err := proto.Unmarshal(raw, &back); err != nil || !bytes.Contains(back.DataBytes, []byte(bad)) {
		t.Errorf("messages.raw does not keep the original text: %v", err)
	}
}

func TestWriterDeadLetters(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	good := castAdd(t, 12, 1, "fine", nil)
	noData := &pb.Message{Hash: []byte{1, 2, 3}}
	mismatch := sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 12, Timestamp: 2,
		Body: &pb.MessageData_ReactionBody{ReactionBody: &pb.ReactionBody{}}})
	longType := link(t, false, 12, 3, strings.Repeat("x", 5000), 1)
	undecodable := &pb.Message{Hash: []byte{4}, DataBytes: []byte{0xff, 0xff, 0xff}}
	res := mustWrite(t, w, merge(good), merge(noData), merge(mismatch), merge(longType), merge(undecodable), nil,
		&pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED, Body: &pb.HubEvent_BlockConfirmedBody{BlockConfirmedBody: &pb.BlockConfirmedBody{}}})
	if res.DeadLetters != 5 || res.Skipped != 1 {
		t.Fatalf("dead letters = %d skipped = %d, want 5 and 1", res.DeadLetters, res.Skipped)
	}
	if !isLive(t, pool, "casts", good.Hash) {
		t.Error("good cast not stored next to bad input")
	}
	rows, err := pool.Query(ctx, `SELECT reason, raw IS NOT NULL FROM dead_letters ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for rows.Next() {
		var r string
		var hasRaw bool
		if err := rows.Scan(&r, &hasRaw); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, r)
	}
	want := "missing_data,body_mismatch,field_too_long,missing_data,missing_event"
	if strings.Join(reasons, ",") != want {
		t.Errorf("reasons = %v, want %s", reasons, want)
	}
}

// TestWriterBisectsFailingBatch forces a row the database rejects and checks
// that only its event is dead-lettered.
func TestWriterBisectsFailingBatch(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE casts ADD CONSTRAINT test_no_poison CHECK (text IS DISTINCT FROM 'poison')`); err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t, pool)
	var evs []*pb.HubEvent
	var msgs []*pb.Message
	for i := range 9 {
		text := "ok"
		if i == 5 {
			text = "poison"
		}
		m := castAdd(t, 13, uint32(i+1), text, nil)
		msgs = append(msgs, m)
		evs = append(evs, merge(m))
	}
	res := mustWrite(t, w, evs...)
	if res.DeadLetters != 1 {
		t.Fatalf("dead letters = %d, want 1", res.DeadLetters)
	}
	live := liveHashes(t, pool, "casts")
	for i, m := range msgs {
		if live[string(m.Hash)] != (i != 5) {
			t.Errorf("cast %d live = %v", i, live[string(m.Hash)])
		}
	}
	var reason, detail string
	if err := pool.QueryRow(ctx, `SELECT reason, detail FROM dead_letters`).Scan(&reason, &detail); err != nil {
		t.Fatal(err)
	}
	if reason != "store_failed" || !strings.Contains(detail, "test_no_poison") {
		t.Errorf("dead letter = %s: %s", reason, detail)
	}
}

func TestWriterWriteMessagesOff(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool, WithWriteMessages(false))
	m := castAdd(t, 14, 1, "x", nil)
	mustWrite(t, w, merge(m), prune(castAdd(t, 14, 2, "y", nil)))
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM messages`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("messages rows = %d (%v), want 0", n, err)
	}
	if !isLive(t, pool, "casts", m.Hash) {
		t.Fatal("cast not stored")
	}
}

func TestNewWriterRejectsDimensionMismatch(t *testing.T) {
	pool := migratedPool(t)
	if _, err := NewWriter(context.Background(), pool, WithEmbedder(embedding.NewLocal(64))); err == nil {
		t.Fatal("writer accepted a 64-dimensional embedder for a 256-dimensional column")
	}
}
