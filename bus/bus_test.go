package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	pb "github.com/waypointhq/waypoint/proto"
)

func openEmbedded(t *testing.T, o Options) *Bus {
	t.Helper()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, o)
	if err != nil {
		t.Fatalf("open bus: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOpenEmbeddedStream(t *testing.T) {
	b := openEmbedded(t, Options{})
	if b.srv == nil {
		t.Fatal("empty URL did not start the embedded server")
	}
	if addr := b.srv.Addr(); addr != nil {
		t.Fatalf("embedded server listens on %v without ListenAddr", addr)
	}
	if b.ClientURL() != "" {
		t.Fatalf("ClientURL %q without ListenAddr", b.ClientURL())
	}
	info, err := b.StreamInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Name != DefaultStream || c.Storage != jetstream.FileStorage || c.Discard != jetstream.DiscardNew ||
		c.Retention != jetstream.LimitsPolicy || c.Duplicates != EmbeddedDuplicateWindow || c.MaxAge != DefaultMaxAge ||
		c.Replicas != 1 || c.Metadata[MetadataPartitions] != "16" {
		t.Fatalf("stream config: %+v", c)
	}
	if strings.Join(c.Subjects, ",") != "waypoint.events.>,waypoint.blocks.>" {
		t.Fatalf("subjects %v", c.Subjects)
	}
}

func TestPartitionCountIsFixed(t *testing.T) {
	dir := t.TempDir()
	b := openEmbedded(t, Options{StoreDir: dir, Stream: "FIXED", Partitions: 8, MaxAge: time.Hour, DuplicateWindow: time.Minute})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	_, err := Open(ctxT(t), Options{StoreDir: dir, Stream: "FIXED", Partitions: 16})
	if err == nil {
		t.Fatal("reopening with another partition count succeeded")
	}
	for _, want := range []string{"8 partitions", "16 are configured", "FIXED"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// Same count: accepted, and the new limits are applied.
	b = openEmbedded(t, Options{StoreDir: dir, Stream: "FIXED", Partitions: 8, MaxAge: 2 * time.Hour, DuplicateWindow: time.Minute})
	info, err := b.StreamInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 2*time.Hour {
		t.Fatalf("max age not updated: %s", info.Config.MaxAge)
	}

	// A stream someone else made, without the metadata, is refused.
	if _, err := b.JetStream().CreateStream(ctxT(t), jetstream.StreamConfig{Name: "FOREIGN", Subjects: []string{"foreign.>"}}); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	_, err = Open(ctxT(t), Options{StoreDir: dir, Stream: "FOREIGN"})
	if err == nil || !strings.Contains(err.Error(), "no "+MetadataPartitions+" metadata") {
		t.Fatalf("foreign stream: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"partitions", Options{Partitions: -1}, "partitions must be"},
		{"too many partitions", Options{Partitions: MaxPartitions + 1}, "partitions must be"},
		{"stream name", Options{Stream: "a.b"}, "stream name"},
		{"two credentials", Options{URL: "nats://x", Token: "t", User: "u"}, "at most one"},
		{"credentials without url", Options{Token: "t"}, "no NATS URL"},
		{"window over age", Options{MaxAge: time.Minute, DuplicateWindow: time.Hour}, "exceeds max age"},
		{"cert without key", Options{URL: "nats://x", TLSCertFile: "c"}, "cert file and a key file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(ctxT(t), tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestPublishHeadersAndDedupe(t *testing.T) {
	b := openEmbedded(t, Options{Partitions: 4})
	ev := &Event{
		Shard: 2, ID: 5<<14 | 3, Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
		FID: 1234, HasFID: true,
		Hashes: [][]byte{{0xab, 0xcd}, {0x01}},
		Data:   []byte("raw hub event bytes"),
	}
	msg := NewMsg(ev, b.Partitions())
	if msg.Subject != EventSubject(1234, 4) {
		t.Fatalf("subject %q", msg.Subject)
	}
	if got := msg.Header.Get(HeaderMsgID); got != "2:81923" {
		t.Fatalf("Nats-Msg-Id %q", got)
	}
	if got := msg.Header.Get(HeaderEventType); got != "MERGE_MESSAGE" {
		t.Fatalf("event type header %q", got)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	prop := propagation.TraceContext{}
	prop.Inject(trace.ContextWithSpanContext(context.Background(), sc), HeaderCarrier(msg.Header))
	if got := msg.Header.Get(HeaderTraceParent); got != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" {
		t.Fatalf("traceparent %q (headers %v)", got, msg.Header)
	}

	for i, wantDup := range []bool{false, true} {
		f, err := b.PublishAsync(NewMsgCopy(msg))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ack := <-f.Ok():
			if ack.Duplicate != wantDup {
				t.Fatalf("publish %d: duplicate=%v", i, ack.Duplicate)
			}
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	}

	raw, err := b.Stream().GetLastMsgForSubject(ctxT(t), msg.Subject)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseMsg(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
	if err != nil {
		t.Fatal(err)
	}
	if got.Shard != ev.Shard || got.ID != ev.ID || got.Type != ev.Type || got.FID != ev.FID || !got.HasFID ||
		len(got.Hashes) != 2 || fmt.Sprintf("%x", got.Hashes[0]) != "abcd" || string(got.Data) != string(ev.Data) {
		t.Fatalf("round trip: %+v", got)
	}
	back := trace.SpanContextFromContext(prop.Extract(context.Background(), HeaderCarrier(raw.Header)))
	if back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() {
		t.Fatalf("extracted span context %v", back)
	}

	// Block events go to the shard's block subject, without a FID header.
	blk := NewMsg(&Event{Shard: 1, ID: 7 << 14, Type: pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED}, 4)
	if blk.Subject != "waypoint.blocks.1" || blk.Header.Get(HeaderFID) != "" {
		t.Fatalf("block message %q %v", blk.Subject, blk.Header)
	}
	pe, err := ParseMsg(blk)
	if err != nil || pe.HasFID || pe.Type != pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED {
		t.Fatalf("parse block message: %+v %v", pe, err)
	}
}

// NewMsgCopy returns a message with the same subject, headers and data,
// because a published message is owned by the publisher until acked.
func NewMsgCopy(m *nats.Msg) *nats.Msg {
	h := nats.Header{}
	for k, v := range m.Header {
		h[k] = append([]string(nil), v...)
	}
	return &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}
}

func TestParseMsgRejectsBadHeaders(t *testing.T) {
	good := NewMsg(&Event{Shard: 1, ID: 2, Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, FID: 3, HasFID: true, Hashes: [][]byte{{1}}}, 16)
	tests := []struct {
		header, value string
	}{
		{HeaderShard, "x"},
		{HeaderShard, ""},
		{HeaderEventID, "-1"},
		{HeaderEventType, "NOT_A_TYPE"},
		{HeaderFID, "fid"},
		{HeaderHash, "zz"},
	}
	for _, tt := range tests {
		m := NewMsgCopy(good)
		m.Header.Set(tt.header, tt.value)
		if _, err := ParseMsg(m); err == nil || !strings.Contains(err.Error(), tt.header) {
			t.Errorf("%s=%q: %v", tt.header, tt.value, err)
		}
	}
	m := NewMsgCopy(good)
	m.Header.Set(HeaderEventType, "42")
	if e, err := ParseMsg(m); err != nil || e.Type != 42 {
		t.Errorf("numeric event type: %v %v", e.Type, err)
	}
}

func TestHeaderCarrierAnyCase(t *testing.T) {
	h := nats.Header{"Traceparent": {"x"}}
	c := HeaderCarrier(h)
	if c.Get("traceparent") != "x" {
		t.Fatal("carrier did not find a differently cased key")
	}
	c.Set("tracestate", "a=b")
	if h.Get("tracestate") != "a=b" || len(c.Keys()) != 2 {
		t.Fatalf("headers %v", h)
	}
}

func TestDiscardNewRejectsWhenFull(t *testing.T) {
	b := openEmbedded(t, Options{Stream: "SMALL", MaxBytes: 64 << 10, Partitions: 2})
	data := make([]byte, 1000)
	var stored int
	var lastErr error
	for i := range 200 {
		_, err := b.JetStream().PublishMsg(ctxT(t), NewMsg(&Event{Shard: 1, ID: uint64(i + 1), FID: uint64(i), HasFID: true, Data: data}, 2))
		if err != nil {
			lastErr = err
			break
		}
		stored++
	}
	var apiErr *jetstream.APIError
	if lastErr == nil || !errors.As(lastErr, &apiErr) || !strings.Contains(lastErr.Error(), "maximum bytes exceeded") {
		t.Fatalf("publish into a full stream: %v", lastErr)
	}
	info, err := b.StreamInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing already stored was dropped to make room.
	if info.State.Msgs != uint64(stored) || info.State.FirstSeq != 1 {
		t.Fatalf("stored %d, stream has %d from seq %d", stored, info.State.Msgs, info.State.FirstSeq)
	}
}

func TestCheckpoints(t *testing.T) {
	dir := t.TempDir()
	b := openEmbedded(t, Options{StoreDir: dir})
	ctx := ctxT(t)
	if _, ok, err := b.LoadCheckpoint(ctx, 1); err != nil || ok {
		t.Fatalf("fresh checkpoint: ok=%v err=%v", ok, err)
	}
	for _, id := range []uint64{10, 1 << 40, 12345} {
		if err := b.SaveCheckpoint(ctx, 1, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SaveCheckpoint(ctx, 2, 7); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()

	b = openEmbedded(t, Options{StoreDir: dir, ListenAddr: "127.0.0.1:0"})
	for shard, want := range map[uint32]uint64{1: 12345, 2: 7} {
		id, ok, err := b.LoadCheckpoint(ctx, shard)
		if err != nil || !ok || id != want {
			t.Fatalf("shard %d after reopen: %d %v %v", shard, id, ok, err)
		}
	}
	// The documented layout, for operators reading the bucket directly.
	kv, err := b.JetStream().KeyValue(ctx, DefaultCheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "WAYPOINT_EVENTS.shard.2"); err != nil || string(e.Value()) != "7" {
		t.Fatalf("bucket entry: %v %v", e, err)
	}
	if _, err := kv.Put(ctx, "WAYPOINT_EVENTS.shard.3", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.LoadCheckpoint(ctx, 3); err == nil || !strings.Contains(err.Error(), "not an event id") {
		t.Fatalf("corrupt checkpoint: %v", err)
	}
	if err := b.DeleteCheckpoint(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.LoadCheckpoint(ctx, 1); err != nil || ok {
		t.Fatalf("deleted checkpoint: ok=%v err=%v", ok, err)
	}
	if err := b.DeleteCheckpoint(ctx, 9); err != nil {
		t.Fatalf("delete missing checkpoint: %v", err)
	}
}

func TestPartitionConsumer(t *testing.T) {
	b := openEmbedded(t, Options{Partitions: 4})
	ctx := ctxT(t)
	want := map[int]int{}
	for fid := uint64(1); fid <= 200; fid++ {
		if _, err := b.JetStream().PublishMsg(ctx, NewMsg(&Event{Shard: 1, ID: fid, FID: fid, HasFID: true, Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE}, 4)); err != nil {
			t.Fatal(err)
		}
		want[Partition(fid, 4)]++
	}
	if _, err := b.JetStream().PublishMsg(ctx, NewMsg(&Event{Shard: 1, ID: 1 << 14, Type: pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED}, 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PartitionConsumer(ctx, "sink", 4, ConsumerOptions{}); err == nil {
		t.Fatal("partition 4 of 4 accepted")
	}
	total := 0
	for p := range 4 {
		c, err := b.PartitionConsumer(ctx, "sink", p, ConsumerOptions{AckWait: 5 * time.Second, MaxAckPending: 50})
		if err != nil {
			t.Fatal(err)
		}
		info := c.CachedInfo()
		if info.Name != ConsumerName("sink", p) || info.Config.FilterSubject != PartitionFilter(p) ||
			info.Config.AckPolicy != jetstream.AckExplicitPolicy || info.Config.MaxAckPending != 50 || info.Config.AckWait != 5*time.Second {
			t.Fatalf("consumer config %+v", info.Config)
		}
		got := 0
		for got < want[p] {
			batch, err := c.Fetch(want[p]-got, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for m := range batch.Messages() {
				n++
				pp, fid, err := ParseEventSubject(m.Subject())
				if err != nil || pp != p || Partition(fid, 4) != p {
					t.Fatalf("partition %d consumer got %s", p, m.Subject())
				}
				if err := m.Ack(); err != nil {
					t.Fatal(err)
				}
			}
			if n == 0 {
				break
			}
			got += n
		}
		if got != want[p] {
			t.Fatalf("partition %d: got %d messages, want %d", p, got, want[p])
		}
		total += got
	}
	if total != 200 {
		t.Fatalf("consumers saw %d messages, want 200 (block events excluded)", total)
	}
	// Binding again keeps the position: nothing is left to deliver.
	c, err := b.PartitionConsumer(ctx, "sink", 0, ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 {
		t.Fatalf("rebound consumer has %d pending", info.NumPending)
	}
}

func TestEmbeddedListenAddr(t *testing.T) {
	b := openEmbedded(t, Options{ListenAddr: "127.0.0.1:0"})
	u := b.ClientURL()
	if !strings.HasPrefix(u, "nats://127.0.0.1:") {
		t.Fatalf("client URL %q", u)
	}
	client := openEmbedded(t, Options{URL: u})
	if client.srv != nil {
		t.Fatal("a URL started an embedded server")
	}
	if err := client.SaveCheckpoint(ctxT(t), 1, 99); err != nil {
		t.Fatal(err)
	}
	if id, ok, err := b.LoadCheckpoint(ctxT(t), 1); err != nil || !ok || id != 99 {
		t.Fatalf("checkpoint over TCP: %d %v %v", id, ok, err)
	}

	// A port in use fails fast with the server's reason.
	start := time.Now()
	_, err := Open(ctxT(t), Options{StoreDir: t.TempDir(), ListenAddr: strings.TrimPrefix(u, "nats://")})
	if err == nil {
		t.Fatal("second embedded server on the same port started")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("port conflict took %s to report", time.Since(start))
	}
}

func TestPositions(t *testing.T) {
	b := openEmbedded(t, Options{})
	ctx := ctxT(t)
	kv, err := b.JetStream().KeyValue(ctx, DefaultCheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		pos   Position
		value string
	}{
		{"checkpoint and sequence", Position{ID: 1 << 40, HasID: true, Seq: 17, HasSeq: true}, "1099511627776:17"},
		{"sequence before the first ack", Position{Seq: 0, HasSeq: true}, ":0"},
		{"checkpoint alone, as older versions saved it", Position{ID: 5, HasID: true}, "5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := b.SavePosition(ctx, 4, c.pos); err != nil {
				t.Fatal(err)
			}
			if e, err := kv.Get(ctx, "WAYPOINT_EVENTS.shard.4"); err != nil || string(e.Value()) != c.value {
				t.Fatalf("bucket entry: %v %v, want %q", e, err, c.value)
			}
			got, ok, err := b.LoadPosition(ctx, 4)
			if err != nil || !ok || got != c.pos {
				t.Fatalf("load: %+v %v %v, want %+v", got, ok, err, c.pos)
			}
			id, ok, err := b.LoadCheckpoint(ctx, 4)
			if err != nil || ok != c.pos.HasID || id != c.pos.ID {
				t.Fatalf("load checkpoint: %d %v %v", id, ok, err)
			}
		})
	}
	// CreatePosition never replaces a position another instance saved.
	first := Position{Seq: 9, HasSeq: true}
	if ok, err := b.CreatePosition(ctx, 6, first); err != nil || !ok {
		t.Fatalf("create on a new key: %v %v", ok, err)
	}
	if ok, err := b.CreatePosition(ctx, 6, Position{Seq: 99, HasSeq: true}); err != nil || ok {
		t.Fatalf("create on an existing key: %v %v", ok, err)
	}
	if got, _, err := b.LoadPosition(ctx, 6); err != nil || got != first {
		t.Fatalf("after a second create: %+v %v", got, err)
	}
	for _, bad := range []string{"1:x", "x:1", ""} {
		if _, err := kv.PutString(ctx, "WAYPOINT_EVENTS.shard.5", bad); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.LoadPosition(ctx, 5); err == nil {
			t.Fatalf("value %q loaded", bad)
		}
	}
}

func TestStoredAfter(t *testing.T) {
	b := openEmbedded(t, Options{})
	ctx := ctxT(t)
	// Two shards interleaved, as ingest publishes them.
	seqs := map[uint32]map[uint64]uint64{1: {}, 2: {}}
	for i := uint64(1); i <= 3000; i++ {
		shard := uint32(1 + i%2)
		ack, err := b.JetStream().PublishMsg(ctx, NewMsg(&Event{Shard: shard, ID: i << 8, FID: i % 50, HasFID: true, Data: []byte("x")}, b.Partitions()))
		if err != nil {
			t.Fatal(err)
		}
		seqs[shard][i<<8] = ack.Sequence
	}
	cases := []struct {
		shard uint32
		after uint64
	}{{1, 0}, {2, 0}, {1, 2500}, {2, 2999}, {1, 3000}, {2, 10000}}
	for _, c := range cases {
		got, err := b.StoredAfter(ctx, c.shard, c.after)
		if err != nil {
			t.Fatal(err)
		}
		want := map[uint64]uint64{}
		for id, seq := range seqs[c.shard] {
			if seq > c.after {
				want[id] = seq
			}
		}
		if len(got) != len(want) {
			t.Fatalf("shard %d after %d: %d events, want %d", c.shard, c.after, len(got), len(want))
		}
		for id, seq := range want {
			if got[id] != seq {
				t.Fatalf("shard %d after %d: event %d at %d, want %d", c.shard, c.after, id, got[id], seq)
			}
		}
	}
	// The reads leave no consumers behind.
	info, err := b.StreamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on the stream", info.State.Consumers)
	}
}
