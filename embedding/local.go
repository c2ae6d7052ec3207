package embedding

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Feature weights before damping. Whole words carry the meaning; word pairs
// add some phrase sensitivity; character trigrams let inflections, typos and
// scripts written without spaces still overlap, but there are many of them
// per word so each gets a small share.
const (
	weightUnigram = 1.0
	weightBigram  = 0.5
	weightTrigram = 0.3
)

// Salts keep the three feature families apart in the hash space, so a word
// never lands on the same bucket as, say, a trigram with an equal raw key.
const (
	saltUnigram = 0x9e3779b97f4a7c15
	saltBigram  = 0xc2b2ae3d27d4eb4f
	saltTrigram = 0x165667b19e3779f9
)

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// ctxCheckEvery bounds how many texts Local.Embed processes between context
// checks; embedding one text takes microseconds, so checking each is waste.
const ctxCheckEvery = 256

// Local is the built-in embedder: signed feature hashing of NFKC-normalised,
// lowercased text (word unigrams, word bigrams, character trigrams) into a
// fixed number of buckets, square-root damped and L2-normalised.
//
// It is deterministic across runs, machines and architectures, so vectors
// written by one sink replica are comparable with query vectors computed
// anywhere else. It captures lexical similarity, not meaning: texts sharing
// words and word fragments are close, paraphrases with disjoint vocabulary
// are not.
//
// A Local must not be copied after first use; NewLocal returns a pointer.
type Local struct {
	dims int
	err  error
	pool sync.Pool // *scratch
}

// NewLocal returns a Local producing vectors of dims elements; 0 selects
// DefaultDimensions. A dims outside [1, MaxDimensions] yields an Embedder
// whose Embed reports the problem, so misconfiguration surfaces as an error
// on first use rather than a crash.
func NewLocal(dims int) Embedder {
	if dims == 0 {
		dims = DefaultDimensions
	}
	l := &Local{dims: dims}
	if dims < 1 || dims > MaxDimensions {
		l.err = fmt.Errorf("embedding: local: dimensions %d out of range [1, %d]", dims, MaxDimensions)
	}
	l.pool.New = func() any { return new(scratch) }
	return l
}

// Dimensions reports the vector length.
func (l *Local) Dimensions() int { return l.dims }

// Embed returns one vector per text. All vectors share one backing array.
func (l *Local) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if l.err != nil {
		return nil, l.err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedding: local: %w", err)
	}
	d := l.dims
	slab := make([]float32, len(texts)*d)
	out := make([][]float32, len(texts))
	s := l.pool.Get().(*scratch)
	defer l.pool.Put(s)
	for i, t := range texts {
		if i > 0 && i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("embedding: local: %w", err)
			}
		}
		v := slab[i*d : (i+1)*d : (i+1)*d]
		s.embed(t, v)
		out[i] = v
	}
	return out, nil
}

// EmbedInto writes the vector for text into dst, which must have exactly
// Dimensions() elements. It does not allocate, which makes it the right call
// on hot paths that own a reusable buffer.
func (l *Local) EmbedInto(text string, dst []float32) error {
	if l.err != nil {
		return l.err
	}
	if len(dst) != l.dims {
		return fmt.Errorf("embedding: local: destination has %d elements, want %d", len(dst), l.dims)
	}
	s := l.pool.Get().(*scratch)
	s.embed(text, dst)
	l.pool.Put(s)
	return nil
}

// scratch holds per-call state too large for the stack; it is pooled so
// embedding a text does not allocate.
type scratch struct {
	it norm.Iter
	f  featurizer
}

func (s *scratch) embed(text string, dst []float32) {
	clear(dst)
	f := &s.f
	f.reset(dst)
	switch {
	case isASCII(text):
		for i := 0; i < len(text); i++ {
			f.feedASCII(text[i])
		}
	case norm.NFKC.QuickSpanString(text) == len(text):
		// Already normalised (the common case for non-ASCII text): skip the
		// iterator and its per-segment copying.
		for _, r := range text {
			f.feed(r)
		}
	default:
		s.it.InitString(norm.NFKC, text)
		for !s.it.Done() {
			seg := s.it.Next()
			for len(seg) > 0 {
				r, n := utf8.DecodeRune(seg)
				seg = seg[n:]
				f.feed(r)
			}
		}
	}
	f.finish()
	f.dst = nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// featurizer tokenises a stream of normalised runes and hashes features into
// dst as they are recognised, without building any strings.
type featurizer struct {
	dst  []float32
	dims uint64
	any  bool // at least one feature was added

	inWord   bool
	wordHash uint64
	havePrev bool // prevWord is a word that can start a bigram
	prevWord uint64

	// Trigram window over the normalised stream, in which every run of
	// separators reads as one space and the text is padded by spaces.
	w1, w2 rune
	wn     int // valid runes in the window, up to 2
}

func (f *featurizer) reset(dst []float32) {
	*f = featurizer{dst: dst, dims: uint64(len(dst)), w2: ' ', wn: 1}
}

// feedASCII is feed specialised for single bytes below utf8.RuneSelf.
func (f *featurizer) feedASCII(c byte) {
	switch {
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		f.wordRune(rune(c))
	case 'A' <= c && c <= 'Z':
		f.wordRune(rune(c + 'a' - 'A'))
	case c == '\'':
		f.apostrophe()
	case c == '.' || c == '!' || c == '?':
		f.sentenceBreak()
	default:
		f.separator()
	}
}

func (f *featurizer) feed(r rune) {
	if r < utf8.RuneSelf {
		f.feedASCII(byte(r))
		return
	}
	switch {
	case r == utf8.RuneError:
		f.separator()
	case unicode.IsLetter(r):
		if isIdeographic(r) {
			f.singleton(r)
			return
		}
		r = unicode.ToLower(r)
		if r == 'ς' { // final sigma is a positional variant of σ
			r = 'σ'
		}
		f.wordRune(r)
	case unicode.IsNumber(r):
		f.wordRune(r)
	case r == '\u2019' || r == '\u02bc': // typographic apostrophes
		f.apostrophe()
	case unicode.Is(unicode.Variation_Selector, r), unicode.Is(unicode.Cf, r), unicode.Is(unicode.Sk, r):
		// Presentation only: emoji variation selectors and skin tones,
		// zero-width joiners, bidi marks, soft hyphens.
	case unicode.IsMark(r):
		if f.inWord {
			f.wordRune(r)
		}
	case unicode.Is(unicode.So, r):
		f.singleton(r) // emoji and other pictographs carry meaning alone
	case unicode.Is(unicode.Sentence_Terminal, r):
		f.sentenceBreak()
	default:
		f.separator()
	}
}

// isIdeographic reports scripts written without spaces between words, where
// each character is treated as a token of its own.
func isIdeographic(r rune) bool {
	return unicode.Is(unicode.Han, r) || unicode.Is(unicode.Hiragana, r) || unicode.Is(unicode.Katakana, r)
}

func (f *featurizer) wordRune(r rune) {
	if !f.inWord {
		f.inWord = true
		f.wordHash = fnvOffset
	}
	f.wordHash = (f.wordHash ^ uint64(r)) * fnvPrime
	f.stream(r)
}

// apostrophe joins contractions and possessives ("don't" reads as "dont")
// rather than splitting them into fragments.
func (f *featurizer) apostrophe() {
	if !f.inWord {
		f.separator()
	}
}

func (f *featurizer) singleton(r rune) {
	f.endWord()
	f.word((fnvOffset ^ uint64(r)) * fnvPrime)
	f.stream(r)
}

func (f *featurizer) separator() {
	f.endWord()
	f.stream(' ')
}

// sentenceBreak ends the word and keeps bigrams from spanning sentences.
func (f *featurizer) sentenceBreak() {
	f.separator()
	f.havePrev = false
}

func (f *featurizer) endWord() {
	if f.inWord {
		f.inWord = false
		f.word(f.wordHash)
	}
}

func (f *featurizer) word(h uint64) {
	f.add(h^saltUnigram, weightUnigram)
	if f.havePrev {
		f.add(bits.RotateLeft64(f.prevWord, 31)^h^saltBigram, weightBigram)
	}
	f.prevWord, f.havePrev = h, true
}

// stream feeds the trigram window. Consecutive spaces collapse into one.
func (f *featurizer) stream(r rune) {
	if r == ' ' && f.w2 == ' ' {
		return
	}
	if f.wn == 2 {
		// Runes fit in 21 bits, so the packed key is exact.
		f.add(uint64(f.w1)<<42|uint64(f.w2)<<21|uint64(r)^saltTrigram, weightTrigram)
	} else {
		f.wn++
	}
	f.w1, f.w2 = f.w2, r
}

func (f *featurizer) finish() {
	f.endWord()
	f.stream(' ')
	if !f.any {
		return
	}
	// Square-root damping makes repeated features sublinear (a word said
	// four times counts twice), then the vector is scaled to unit length.
	// After damping each element squared is |x|, so the norm is a plain sum.
	var sum float64
	for _, x := range f.dst {
		sum += math.Abs(float64(x))
	}
	if sum == 0 {
		return // every feature cancelled out
	}
	scale := 1 / math.Sqrt(sum)
	for i, x := range f.dst {
		switch {
		case x > 0:
			f.dst[i] = float32(math.Sqrt(float64(x)) * scale)
		case x < 0:
			f.dst[i] = -float32(math.Sqrt(float64(-x)) * scale)
		}
	}
}

// add hashes a feature key to a bucket and a sign. The sign makes colliding
// features cancel in expectation instead of piling up.
func (f *featurizer) add(key uint64, w float32) {
	h := mix64(key)
	i := (h >> 32) * f.dims >> 32 // multiply-shift range reduction, any dims
	if h&1 == 0 {
		f.dst[i] += w
	} else {
		f.dst[i] -= w
	}
	f.any = true
}

// mix64 is the SplitMix64 finaliser: a cheap bijection with full avalanche,
// so FNV's weak low bits and the packed trigram keys spread evenly.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
