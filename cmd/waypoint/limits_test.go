package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestHubMaxReceiveMB checks that hub.max_receive_mb reaches the client:
// a page of events larger than the limit fails its call with
// RESOURCE_EXHAUSTED, and the same page under the default limit is read.
func TestHubMaxReceiveMB(t *testing.T) {
	_, addr := testsupport.StartDevnet(t, devnet.Options{Shards: 1, FIDs: 50, Preload: 12000})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		mb   int
		want codes.Code
	}{
		{1, codes.ResourceExhausted},
		{config.Default().Hub.MaxReceiveMB, codes.OK},
	} {
		cfg := config.Default()
		cfg.Hub.URL, cfg.Hub.MaxReceiveMB = addr, c.mb
		h, err := dialHub(ctx, &cfg, slog.New(slog.DiscardHandler), 1)
		if err != nil {
			t.Fatal(err)
		}
		var got error
		for page, err := range h.EventsPages(ctx, 1, 0, 0, hub.MaxPageSize) {
			if err != nil {
				got = err
				break
			}
			size := 0
			for _, ev := range page {
				size += proto.Size(ev)
			}
			if size <= 1<<20 {
				t.Fatalf("first page holds %d bytes: the devnet preload is too small to test a 1 MiB limit", size)
			}
			break
		}
		h.Close()
		if status.Code(got) != c.want {
			t.Errorf("max_receive_mb = %d: err %v, want %v", c.mb, got, c.want)
		}
	}
}
