package devnet

import (
	"sort"
	"sync"

	pb "github.com/waypointhq/waypoint/proto"
)

// chunkSize is the size of the arenas encoded events are packed into. Events
// are immutable once appended, so readers slice into arenas without copying
// and the index holds no pointers for the garbage collector to chase.
const chunkSize = 1 << 20

const (
	flagHidden uint8 = 1 << iota // dropped from live streams (fault injection)
)

// ref locates one encoded event in a shard's arenas.
type ref struct {
	id    uint64
	chunk uint32 // absolute chunk number
	off   uint32
	n     uint32
	dup   dupLayout // the stored bytes leave out a repeated run
	typ   uint8     // HubEventType, or typeUnknown for injected bytes that do not parse
	flags uint8
}

// typeUnknown marks an injected event whose type could not be read; it is
// delivered to every stream that asked for at least one type.
const typeUnknown = 0xff

type blockMark struct {
	height uint64
	ts     uint64 // Farcaster seconds
	pos    uint64 // absolute position of its first event
}

// eventLog is one shard's stored event stream: encoded HubEvents in id
// order, as a node keeps them in its database.
type eventLog struct {
	mu         sync.RWMutex
	chunks     [][]byte
	chunkBase  uint32 // absolute number of chunks[0]
	refs       []ref
	base       uint64 // absolute position of refs[0]
	blocks     []blockMark
	totalBytes uint64
}

// appendBlock stores a block's encoded events, evs[i] being the event
// rs[i] describes, and replaces each evs[i] by its stored copy.
func (l *eventLog) appendBlock(mark blockMark, evs [][]byte, rs []ref) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mark.pos = l.base + uint64(len(l.refs))
	l.blocks = append(l.blocks, mark)
	for i, b := range evs {
		r := rs[i]
		r.chunk, r.off = l.place(b)
		r.n = uint32(len(b))
		l.refs = append(l.refs, r)
		l.totalBytes += uint64(len(b))
		evs[i] = l.bytesOf(r)
	}
}

// place copies b into the arena and returns where it went.
func (l *eventLog) place(b []byte) (uint32, uint32) {
	if n := len(l.chunks); n > 0 {
		c := l.chunks[n-1]
		if cap(c)-len(c) >= len(b) {
			off := len(c)
			l.chunks[n-1] = append(c, b...)
			return l.chunkBase + uint32(n-1), uint32(off)
		}
	}
	size := chunkSize
	if len(b) > size {
		size = len(b)
	}
	c := make([]byte, 0, size)
	c = append(c, b...)
	l.chunks = append(l.chunks, c)
	return l.chunkBase + uint32(len(l.chunks)-1), 0
}

func (l *eventLog) bytesOf(r ref) []byte {
	c := l.chunks[r.chunk-l.chunkBase]
	return c[r.off : r.off+r.n : r.off+r.n]
}

// end returns the absolute position after the last event.
func (l *eventLog) end() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base + uint64(len(l.refs))
}

// seek returns the absolute position of the first kept event with id >= id.
func (l *eventLog) seek(id uint64) uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.refs), func(i int) bool { return l.refs[i].id >= id })
	return l.base + uint64(i)
}

// item is an event handed to a reader: its stored bytes and their layout.
type item struct {
	id    uint64
	typ   uint8
	flags uint8
	dup   dupLayout
	b     []byte
}

// full returns the event's encoding.
func (it item) full() []byte { return it.dup.expand(it.b) }

func (l *eventLog) item(r ref) item {
	return item{id: r.id, typ: r.typ, flags: r.flags, dup: r.dup, b: l.bytesOf(r)}
}

// read appends up to max events starting at absolute position pos to dst. It
// returns the position after the last one read; a pos that has expired is
// moved up to the oldest kept event.
func (l *eventLog) read(dst []item, pos uint64, max int) ([]item, uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if pos < l.base {
		pos = l.base
	}
	i := int(pos - l.base)
	for ; i < len(l.refs) && max > 0; i++ {
		r := l.refs[i]
		dst = append(dst, l.item(r))
		max--
	}
	return dst, l.base + uint64(i)
}

// get returns the event with the given id.
func (l *eventLog) get(id uint64) (item, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.refs), func(i int) bool { return l.refs[i].id >= id })
	if i == len(l.refs) || l.refs[i].id != id {
		return item{}, false
	}
	r := l.refs[i]
	return l.item(r), true
}

// rangeIDs returns up to max events with start <= id < stop (nil stop: no
// bound), after (forward) or before (reverse) the cursor id when hasCursor
// is set.
func (l *eventLog) rangeIDs(start uint64, stop *uint64, reverse, hasCursor bool, cursor uint64, max int) []item {
	l.mu.RLock()
	defer l.mu.RUnlock()
	lo := sort.Search(len(l.refs), func(i int) bool { return l.refs[i].id >= start })
	hi := len(l.refs)
	if stop != nil {
		hi = sort.Search(len(l.refs), func(i int) bool { return l.refs[i].id >= *stop })
	}
	if hi < lo {
		hi = lo
	}
	var out []item
	if !reverse {
		if hasCursor {
			if c := sort.Search(len(l.refs), func(i int) bool { return l.refs[i].id > cursor }); c > lo {
				lo = c
			}
		}
		for i := lo; i < hi && len(out) < max; i++ {
			r := l.refs[i]
			out = append(out, l.item(r))
		}
		return out
	}
	if hasCursor {
		if c := sort.Search(len(l.refs), func(i int) bool { return l.refs[i].id >= cursor }); c < hi {
			hi = c
		}
	}
	for i := hi - 1; i >= lo && len(out) < max; i-- {
		r := l.refs[i]
		out = append(out, l.item(r))
	}
	return out
}

// expireBefore drops every event whose position is before pos and returns
// how many were dropped.
func (l *eventLog) expireBefore(pos uint64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pos <= l.base {
		return 0
	}
	n := int(pos - l.base)
	if n > len(l.refs) {
		n = len(l.refs)
	}
	for _, r := range l.refs[:n] {
		l.totalBytes -= uint64(r.n)
	}
	// Reslicing leaves the dropped prefix in the backing array until the
	// next growth copies only the kept part: amortized, not a copy of the
	// whole index per expiry.
	l.refs = l.refs[n:]
	l.base += uint64(n)
	// Release whole arenas no kept event points into. The last arena stays
	// even when empty of kept events: appends continue into it.
	if len(l.chunks) == 0 {
		return n
	}
	keep := uint32(len(l.chunks) - 1)
	if len(l.refs) > 0 {
		keep = l.refs[0].chunk - l.chunkBase
	}
	if keep > 0 {
		l.chunks = append([][]byte(nil), l.chunks[keep:]...)
		l.chunkBase += keep
	}
	b := sort.Search(len(l.blocks), func(i int) bool { return l.blocks[i].pos >= l.base })
	l.blocks = l.blocks[b:]
	return n
}

// posOfTime returns the position of the first event of the first block
// with a timestamp at or after ts.
func (l *eventLog) posOfTime(ts uint64) uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.blocks), func(i int) bool { return l.blocks[i].ts >= ts })
	switch {
	case i == 0:
		return l.base
	case i == len(l.blocks):
		return l.base + uint64(len(l.refs))
	}
	return l.blocks[i].pos
}

// mergesBefore returns the (full) encodings of the MERGE_MESSAGE events
// before absolute position pos.
func (l *eventLog) mergesBefore(pos uint64) [][]byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out [][]byte
	for i := 0; i < len(l.refs) && l.base+uint64(i) < pos; i++ {
		if r := l.refs[i]; r.typ == uint8(pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE) {
			out = append(out, l.item(r).full())
		}
	}
	return out
}

// stats returns the number of kept events, their encoded size and the id of
// the oldest.
func (l *eventLog) stats() (n int, size uint64, oldest uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.refs) > 0 {
		oldest = l.refs[0].id
	}
	return len(l.refs), l.totalBytes, oldest
}
