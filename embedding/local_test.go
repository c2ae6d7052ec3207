package embedding

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

func l2(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func embedOne(t testing.TB, e Embedder, text string) []float32 {
	t.Helper()
	vs, err := e.Embed(context.Background(), []string{text})
	if err != nil {
		t.Fatalf("embed %q: %v", text, err)
	}
	if len(vs) != 1 || len(vs[0]) != e.Dimensions() {
		t.Fatalf("embed %q: got %d vectors of %d, want 1 of %d", text, len(vs), len(vs[0]), e.Dimensions())
	}
	return vs[0]
}

func vectorDigest(v []float32) uint64 {
	h := fnv.New64a()
	var b [4]byte
	for _, x := range v {
		u := math.Float32bits(x)
		b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		h.Write(b[:])
	}
	return h.Sum64()
}

func TestLocalDimensions(t *testing.T) {
	tests := []struct {
		dims    int
		want    int
		wantErr bool
	}{
		{dims: 0, want: DefaultDimensions},
		{dims: 1, want: 1},
		{dims: 3, want: 3},
		{dims: 256, want: 256},
		{dims: 1536, want: 1536},
		{dims: MaxDimensions, want: MaxDimensions},
		{dims: -1, want: -1, wantErr: true},
		{dims: MaxDimensions + 1, want: MaxDimensions + 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.dims), func(t *testing.T) {
			e := NewLocal(tt.dims)
			if got := e.Dimensions(); got != tt.want {
				t.Fatalf("Dimensions() = %d, want %d", got, tt.want)
			}
			vs, err := e.Embed(context.Background(), []string{"hello farcaster"})
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), fmt.Sprint(tt.dims)) {
					t.Fatalf("Embed error = %v, want one naming dimensions %d", err, tt.dims)
				}
				if err := e.(*Local).EmbedInto("x", make([]float32, 4)); err == nil {
					t.Fatal("EmbedInto succeeded with invalid dimensions")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(vs[0]) != tt.want {
				t.Fatalf("vector length %d, want %d", len(vs[0]), tt.want)
			}
			if n := l2(vs[0]); math.Abs(n-1) > 1e-5 {
				t.Fatalf("norm %v, want 1", n)
			}
		})
	}
}

func TestLocalEmbedIntoLength(t *testing.T) {
	l := NewLocal(64).(*Local)
	for _, n := range []int{0, 63, 65} {
		if err := l.EmbedInto("gm", make([]float32, n)); err == nil {
			t.Errorf("EmbedInto with %d elements succeeded, want error", n)
		}
	}
	dst := make([]float32, 64)
	for i := range dst {
		dst[i] = 42 // stale contents must not leak into the result
	}
	if err := l.EmbedInto("gm frens", dst); err != nil {
		t.Fatal(err)
	}
	want := embedOne(t, l, "gm frens")
	for i := range dst {
		if dst[i] != want[i] {
			t.Fatalf("EmbedInto[%d] = %v, Embed gives %v", i, dst[i], want[i])
		}
	}
}

func TestLocalDeterministic(t *testing.T) {
	texts := []string{
		"Just shipped a new frame on Farcaster 🚀",
		"東京は今日とても暑いです",
		"Ünïcödé wörds and ﬁligatures",
		"",
	}
	a, b := NewLocal(0), NewLocal(0)
	first, err := a.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		for _, e := range []Embedder{a, b} {
			again, err := e.Embed(context.Background(), texts)
			if err != nil {
				t.Fatal(err)
			}
			for i := range texts {
				if vectorDigest(again[i]) != vectorDigest(first[i]) {
					t.Fatalf("round %d: vector for %q changed", round, texts[i])
				}
			}
		}
	}
}

// TestLocalStable pins the exact output. Stored vectors are only comparable
// with query vectors computed by the same feature extraction, so a change
// here means every stored local embedding must be recomputed.
func TestLocalStable(t *testing.T) {
	tests := []struct {
		text   string
		digest uint64
	}{
		{"gm farcaster, frames are live", 0xd8e6c7a7e51bc30c},
		{"東京は今日とても暑いです 🚀", 0x33e8f18ad4aa19fe},
	}
	e := NewLocal(DefaultDimensions)
	for _, tt := range tests {
		if got := vectorDigest(embedOne(t, e, tt.text)); got != tt.digest {
			t.Errorf("digest of %q = %#x, want %#x", tt.text, got, tt.digest)
		}
	}
}

func TestLocalUnitNorm(t *testing.T) {
	texts := []string{
		"a",
		"gm",
		"🚀",
		"日",
		"The quick brown fox jumps over the lazy dog",
		strings.Repeat("spam ", 500),
		strings.Repeat("long cast with many different words number ", 40),
		"Ωμέγα ΣΊΣΥΦΟΣ",
		"नमस्ते दुनिया",
		"مرحبا بالعالم",
	}
	for _, dims := range []int{1, 2, 7, 256, 1024} {
		e := NewLocal(dims)
		for _, text := range texts {
			v := embedOne(t, e, text)
			if n := l2(v); math.Abs(n-1) > 1e-5 {
				t.Errorf("dims %d, %q: norm %v, want 1", dims, text, n)
			}
		}
	}
}

func TestLocalZeroVector(t *testing.T) {
	e := NewLocal(0)
	for _, text := range []string{"", " ", "\t\n\r  ", "\u00a0\u3000", "...!!!???", "---", "\x00\x00", "\ufe0f\u200d", "\xff\xfe"} {
		v := embedOne(t, e, text)
		if n := l2(v); n != 0 {
			t.Errorf("%q: norm %v, want zero vector", text, n)
		}
	}
}

// TestLocalEquivalentForms checks that normalisation folds away differences
// that carry no meaning.
func TestLocalEquivalentForms(t *testing.T) {
	tests := []struct{ a, b string }{
		{"Hello World", "hello world"},
		{"HELLO   WORLD", "hello, world"},
		{"ΣΊΣΥΦΟΣ", "σίσυφος"},
		{"café", "cafe\u0301"},
		{"ＦＡＲＣＡＳＴＥＲ ｆｒａｍｅｓ", "farcaster frames"},
		{"ﬁle", "file"},
		{"I ❤️ frames", "I ❤ frames"},
		{"👍🏽 nice", "👍 nice"},
		{"don't", "dont"},
		{"don’t", "dont"},
		{"zero\u200bwidth", "zerowidth"},
	}
	e := NewLocal(0)
	for _, tt := range tests {
		if vectorDigest(embedOne(t, e, tt.a)) != vectorDigest(embedOne(t, e, tt.b)) {
			t.Errorf("%q and %q embed differently", tt.a, tt.b)
		}
	}
}

func TestLocalDistinguishes(t *testing.T) {
	tests := []struct{ a, b string }{
		{"dog bites man", "man bites dog"}, // bigrams carry order
		{"hello. world", "hello world"},    // no bigram across sentences
		{"ethereum", "ethereal"},
		{"🚀", "🌙"},
		{"日本", "本日"},
	}
	e := NewLocal(0)
	for _, tt := range tests {
		va, vb := embedOne(t, e, tt.a), embedOne(t, e, tt.b)
		if vectorDigest(va) == vectorDigest(vb) {
			t.Errorf("%q and %q embed identically", tt.a, tt.b)
		}
	}
}

func TestLocalNearestNeighbour(t *testing.T) {
	corpus := []string{
		"The quick brown fox jumps over the lazy dog",
		"Ethereum gas fees are really high today",
		"Just deployed my first smart contract on Base",
		"Farcaster frames are the future of social apps",
		"I love pizza with extra cheese and mushrooms",
		"GM everyone, coffee first then code",
		"東京は今日とても暑いです",
		"Bitcoin price hits a new all-time high",
		"Η Αθήνα είναι όμορφη την άνοιξη",
		"Watching the sunset at the beach with my dog",
	}
	tests := []struct {
		query string
		want  int
	}{
		{"a quick brown fox jumped over a lazy dog", 0},
		{"gas fees on ethereum are so high", 1},
		{"deploying smart contracts on base", 2},
		{"farcaster frames for social apps", 3},
		{"ＦＡＲＣＡＳＴＥＲ ＦＲＡＭＥＳ", 3},
		{"pizza with cheese, love it", 4},
		{"gm! coffee then code", 5},
		{"今日の東京は暑い", 6},
		{"BTC price at an all time high", 7},
		{"ΑΘΗΝΑ την άνοιξη", 8},
		{"sunset on the beach", 9},
		{"ethreum gas fee", 1}, // typo: trigrams still overlap
	}
	for _, dims := range []int{DefaultDimensions, 1024} {
		e := NewLocal(dims)
		docs, err := e.Embed(context.Background(), corpus)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			q := embedOne(t, e, tt.query)
			best, bestSim := -1, -2.0
			for i, d := range docs {
				if s := cosine(q, d); s > bestSim {
					best, bestSim = i, s
				}
			}
			if best != tt.want {
				t.Errorf("dims %d: nearest to %q is %q (%.3f), want %q (%.3f)",
					dims, tt.query, corpus[best], bestSim, corpus[tt.want], cosine(q, docs[tt.want]))
			}
		}
	}
}

func TestLocalHostileInput(t *testing.T) {
	texts := []string{
		"\x00",
		"nul\x00inside\x00text",
		"\xff\xfe\xfd",
		"valid then \xc3\x28 invalid",
		"\xed\xa0\x80 surrogate half",
		"\u0301\u0301\u0301 marks without base",
		strings.Repeat("\u0301", 1000),
		"a" + strings.Repeat("\u0308", 200) + "b", // longer than a normalisation segment
		"👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 🇯🇵",
		"Ｈａｌｆ ｗｉｄｔｈ ｶﾀｶﾅ ㍿ ㈱",
		"\U0010FFFF\U000E0001",
		strings.Repeat("x", 1<<16),
		strings.Repeat("🚀", 5000),
	}
	e := NewLocal(0)
	vs, err := e.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		n := l2(v)
		if math.IsNaN(n) || (n != 0 && math.Abs(n-1) > 1e-5) {
			t.Errorf("%q: norm %v", texts[i], n)
		}
	}
}

func TestLocalEmbedBatch(t *testing.T) {
	e := NewLocal(32)
	texts := make([]string, 1000)
	for i := range texts {
		texts[i] = fmt.Sprintf("cast number %d about topic %d", i, i%7)
	}
	vs, err := e.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(texts) {
		t.Fatalf("got %d vectors for %d texts", len(vs), len(texts))
	}
	for i := range texts {
		if len(vs[i]) != 32 || cap(vs[i]) != 32 {
			t.Fatalf("vector %d: len %d cap %d, want 32/32", i, len(vs[i]), cap(vs[i]))
		}
		if vectorDigest(vs[i]) != vectorDigest(embedOne(t, e, texts[i])) {
			t.Fatalf("vector %d differs from embedding %q alone", i, texts[i])
		}
	}

	empty, err := e.Embed(context.Background(), nil)
	if err != nil || len(empty) != 0 {
		t.Fatalf("Embed(nil) = %v, %v; want empty, nil", empty, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Embed(ctx, texts); !errors.Is(err, context.Canceled) {
		t.Fatalf("Embed with cancelled context: %v, want context.Canceled", err)
	}
}

func TestLocalConcurrent(t *testing.T) {
	e := NewLocal(0).(*Local)
	texts := []string{"gm", "東京 🚀", "Ünïcödé", "the quick brown fox"}
	want := make([]uint64, len(texts))
	for i, text := range texts {
		want[i] = vectorDigest(embedOne(t, e, text))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]float32, e.Dimensions())
			for n := 0; n < 200; n++ {
				i := (g + n) % len(texts)
				if err := e.EmbedInto(texts[i], dst); err != nil {
					errs <- err
					return
				}
				if vectorDigest(dst) != want[i] {
					errs <- fmt.Errorf("goroutine %d: vector for %q differs", g, texts[i])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func FuzzLocal(f *testing.F) {
	for _, s := range []string{"", "gm", "\x00", "\xff", "日本語", "🚀🏽\u200d", "a\u0301\u0302", "ﬃ ＡＢＣ"} {
		f.Add(s)
	}
	e := NewLocal(64).(*Local)
	dst := make([]float32, 64)
	f.Fuzz(func(t *testing.T, s string) {
		if err := e.EmbedInto(s, dst); err != nil {
			t.Fatal(err)
		}
		n := l2(dst)
		if math.IsNaN(n) || (n != 0 && math.Abs(n-1) > 1e-5) {
			t.Fatalf("%q: norm %v", s, n)
		}
		if n == 0 && utf8.ValidString(s) && strings.ContainsFunc(s, func(r rune) bool { return 'a' <= r && r <= 'z' }) {
			t.Fatalf("%q has letters but embeds to zero", s)
		}
	})
}

// benchCasts is a mix of typical cast shapes: plain English of 100-300
// bytes, emoji, links, and non-Latin scripts.
var benchCasts = []string{
	"gm frens! just shipped a new frame that lets you mint directly from your feed. would love some feedback before we open it up to everyone this weekend 🚀",
	"Hot take: onchain social only works if the clients compete on UX while the data layer stays open. Farcaster got this right, and the numbers over the last year show it.",
	"Reading through the new Snapchain docs tonight. The sharding model is clever: every FID maps to a shard and validators only gossip what they need. Curious how it holds up at 10k TPS.",
	"anyone going to devconnect? looking for people to grab coffee with and talk about decentralized identity, key rotation and recovery flows",
	"東京は今日とても暑いです。アイスコーヒーを飲みながらコードを書いています ☕️",
	"New blog post: why we moved our indexer from polling to streaming subscriptions, and what broke along the way https://example.com/posts/streaming-indexer",
	"Ça fait plaisir de voir autant de développeurs francophones ici. Qui construit quelque chose avec les frames en ce moment ?",
	"$DEGEN tips are back 🎩 thank you all for the support this week, the community keeps surprising me",
}

func BenchmarkLocalEmbedInto(b *testing.B) {
	for _, dims := range []int{DefaultDimensions, 768} {
		b.Run(fmt.Sprintf("dims=%d", dims), func(b *testing.B) {
			e := NewLocal(dims).(*Local)
			dst := make([]float32, dims)
			var bytes int
			for _, c := range benchCasts {
				bytes += len(c)
			}
			b.SetBytes(int64(bytes / len(benchCasts)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := e.EmbedInto(benchCasts[i%len(benchCasts)], dst); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "casts/s")
		})
	}
}

func BenchmarkLocalEmbed(b *testing.B) {
	e := NewLocal(DefaultDimensions)
	batch := make([]string, 500)
	for i := range batch {
		batch[i] = benchCasts[i%len(benchCasts)]
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Embed(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "casts/s")
}
