package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// TestConcurrentOpenOnFreshServers starts servers and, without waiting for
// JetStream or a meta leader, opens the bus from several processes at once,
// as sink and ingest processes deployed together do, each with its own
// MaxAge as during a rolling change, so creates conflict. Every Open must
// succeed, and the servers must end with one stream of the configured
// layout.
func TestConcurrentOpenOnFreshServers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		urls     func(t *testing.T) []string
		replicas int
	}{
		{"one server", func(t *testing.T) []string { return []string{testsupport.StartNATSServer(t).URL} }, 1},
		{"three-node cluster", func(t *testing.T) []string { return testsupport.StartNATSCluster(t, 3).URLs }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const opens = 8
			const stream, partitions = "RACE", 8
			urls := tc.urls(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var logs testsupport.SyncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			buses := make([]*Bus, opens)
			errs := make([]error, opens)
			var wg sync.WaitGroup
			for i := range opens {
				wg.Go(func() {
					buses[i], errs[i] = Open(ctx, Options{URL: urls[i%len(urls)], Name: fmt.Sprintf("open-%d", i),
						Stream: stream, Partitions: partitions, Replicas: tc.replicas, MaxAge: time.Duration(i+1) * time.Hour, Logger: log})
				})
			}
			wg.Wait()
			for i, b := range buses {
				if b != nil {
					t.Cleanup(func() { _ = b.Close() })
				}
				if errs[i] != nil {
					t.Errorf("open %d: %v", i, errs[i])
				}
			}
			t.Logf("retries logged: %d", strings.Count(logs.String(), "retrying"))
			if t.Failed() {
				t.Fatalf("log:\n%s", logs.String())
			}

			var names []string
			l := buses[0].JetStream().StreamNames(ctx)
			for n := range l.Name() {
				names = append(names, n)
			}
			if l.Err() != nil {
				t.Fatal(l.Err())
			}
			want := []string{stream, "KV_" + DefaultCheckpointBucket}
			if len(names) != len(want) || !containsAll(names, want) {
				t.Fatalf("streams %v, want %v", names, want)
			}
			for _, b := range buses {
				info, err := b.StreamInfo(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if c := info.Config; c.Replicas != tc.replicas || c.Metadata[MetadataPartitions] != fmt.Sprint(partitions) ||
					c.Discard != jetstream.DiscardNew || c.MaxAge < time.Hour || c.MaxAge > opens*time.Hour {
					t.Fatalf("stream config: %+v", c)
				}
			}
			// Every bus is usable: each one's publish is stored.
			for i, b := range buses {
				ev := &Event{Shard: 1, ID: uint64(i + 1), Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, FID: uint64(i + 1), HasFID: true, Data: []byte{1}}
				if _, err := b.JetStream().PublishMsg(ctx, NewMsg(ev, partitions)); err != nil {
					t.Fatalf("publish through open %d: %v", i, err)
				}
			}
			info, err := buses[0].StreamInfo(ctx)
			if err != nil || info.State.Msgs != opens {
				t.Fatalf("stream holds %+v (%v), want %d messages", info.State, err, opens)
			}
		})
	}
}

func containsAll(have, want []string) bool {
	set := make(map[string]bool, len(have))
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

// TestPartitionMismatchFailsFast checks that a stream created with another
// partition count is refused on the first attempt, not retried until the
// caller gives up.
func TestPartitionMismatchFailsFast(t *testing.T) {
	srv := testsupport.StartNATSServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Open(ctx, Options{URL: srv.URL, Stream: "FIXED", Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	var logs testsupport.SyncBuffer
	_, err = Open(ctx, Options{URL: srv.URL, Stream: "FIXED", Partitions: 16, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil || !strings.Contains(err.Error(), "created with 8 partitions but 16 are configured") {
		t.Fatalf("open with another partition count: %v", err)
	}
	if ctx.Err() != nil || strings.Contains(err.Error(), "gave up") || strings.Contains(logs.String(), "retrying") {
		t.Fatalf("the mismatch was retried: %v\n%s", err, logs.String())
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"meta leader not elected", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"no peers yet", fmt.Errorf("bus: create stream S: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005}), true},
		{"lost a create race", jetstream.ErrStreamNameAlreadyInUse, true},
		{"attempt timed out", fmt.Errorf("bus: look up stream S: %w", context.DeadlineExceeded), true},
		{"invalid config", &jetstream.APIError{Code: 500, ErrorCode: 10052}, false},
		{"replicas without a cluster", &jetstream.APIError{Code: 500, ErrorCode: 10074}, false},
		{"account without jetstream", &jetstream.APIError{Code: 503, ErrorCode: 10039}, false},
		{"partition mismatch", checkPartitions("S", map[string]string{MetadataPartitions: "8"}, 16), false},
		{"other", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := transient(tc.err); got != tc.want {
				t.Fatalf("transient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
