package devnet

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// Load signs each of data with signer and merges the messages exactly as
// Submit merges the same signed messages: the same state, the same events
// in the same blocks, the same errors. Submit has to verify every
// signature it is given; Load made the signatures itself, so it skips that
// check (the most expensive step of a merge) and signs on every core. It
// is the way to give a simulated account a long history quickly.
func (s *Sim) Load(signer *Signer, data ...*pb.MessageData) error {
	ready := make([]prepared, len(data))
	parallel(len(data), func(i int) {
		d := data[i]
		if d == nil {
			ready[i] = prepared{err: fmt.Errorf("devnet: message %d: no data", i)}
			return
		}
		// Submit's signature check also refuses another network's messages;
		// that part of it still applies.
		if net := s.opts.Network; net != pb.FarcasterNetwork_FARCASTER_NETWORK_NONE && d.Network != net {
			ready[i] = prepared{err: fmt.Errorf("devnet: message %d: message is for %v, want %v", i, d.Network, net)}
			return
		}
		m, err := signer.Sign(d)
		if err != nil {
			ready[i] = prepared{err: fmt.Errorf("devnet: message %d: %w", i, err)}
			return
		}
		// The hash and data_bytes were made from d just now, so they agree
		// by construction.
		ready[i] = s.prepare(i, m, message.CheckNone)
	})
	return s.mergePrepared(ready)
}

// parallel calls fn for every index below n, split across all cores when
// there are enough to be worth it.
func parallel(n int, fn func(i int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < 64 || workers == 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				fn(i)
			}
		}(lo, min(lo+per, n))
	}
	wg.Wait()
}
