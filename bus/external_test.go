package bus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// checkUsable proves the connection reaches JetStream: a publish into the
// stream is acked and a checkpoint round-trips.
func checkUsable(t *testing.T, b *Bus) {
	t.Helper()
	ctx := ctxT(t)
	if b.srv != nil {
		t.Fatal("an external URL started the embedded server")
	}
	ack, err := b.JetStream().PublishMsg(ctx, NewMsg(&Event{Shard: 1, ID: 42, Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, FID: 7, HasFID: true, Data: []byte{1}}, b.Partitions()))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != DefaultStream {
		t.Fatalf("acked by stream %q", ack.Stream)
	}
	if err := b.SaveCheckpoint(ctx, 1, 42); err != nil {
		t.Fatal(err)
	}
	if id, ok, err := b.LoadCheckpoint(ctx, 1); err != nil || !ok || id != 42 {
		t.Fatalf("checkpoint: %d %v %v", id, ok, err)
	}
}

func TestExternalServerCredentials(t *testing.T) {
	nkeyUser, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := nkeyUser.PublicKey()
	seed, _ := nkeyUser.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "user.nk")
	otherSeedFile := filepath.Join(dir, "other.nk")
	conf := filepath.Join(dir, "nkey.conf")
	for name, data := range map[string]string{
		seedFile:      string(seed),
		otherSeedFile: string(otherSeed),
		conf:          "authorization { users = [ { nkey: \"" + pub + "\" } ] }\n",
	} {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name   string
		server []string
		good   Options
		bad    []Options
	}{
		{
			name:   "user and password",
			server: []string{"--user", "waypoint", "--pass", "s3cret"},
			good:   Options{User: "waypoint", Password: "s3cret"},
			bad:    []Options{{User: "waypoint", Password: "wrong"}, {}},
		},
		{
			name:   "token",
			server: []string{"--auth", "tok3n"},
			good:   Options{Token: "tok3n"},
			bad:    []Options{{Token: "other"}, {}},
		},
		{
			name:   "nkey",
			server: []string{"-c", conf},
			good:   Options{NKeyFile: seedFile},
			bad:    []Options{{NKeyFile: otherSeedFile}, {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testsupport.StartNATSServer(t, tt.server...)
			good := tt.good
			good.URL = srv.URL
			good.ConnectTimeout = 5 * time.Second
			b := openEmbedded(t, good)
			checkUsable(t, b)

			for _, bad := range tt.bad {
				bad.URL = srv.URL
				_, err := Open(ctxT(t), bad)
				if err == nil {
					t.Fatalf("connected with bad credentials %+v", bad)
				}
				if !strings.Contains(err.Error(), "rejected the credentials") || !strings.Contains(err.Error(), srv.URL) {
					t.Fatalf("bad credentials error is not clear: %v", err)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "tok3n") {
					t.Fatalf("error leaks a secret: %v", err)
				}
			}
		})
	}
}

func TestExternalServerErrors(t *testing.T) {
	_, err := Open(ctxT(t), Options{URL: "nats://127.0.0.1:1", ConnectTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "connect to nats://127.0.0.1:1") {
		t.Fatalf("unreachable server: %v", err)
	}
	_, err = Open(ctxT(t), Options{URL: "nats://u:hunter2@127.0.0.1:1", ConnectTimeout: time.Second})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("unreachable server with password in URL: %v", err)
	}
	_, err = Open(ctxT(t), Options{URL: "nats://127.0.0.1:1", NKeyFile: "/nonexistent/seed.nk"})
	if err == nil || !strings.Contains(err.Error(), "nkey seed file") {
		t.Fatalf("missing nkey file: %v", err)
	}
}
