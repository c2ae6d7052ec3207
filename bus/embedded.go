package bus

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedMaxPayload allows events far larger than any the network emits
// (a LINK_COMPACT_STATE of thousands of FIDs stays well below it).
const embeddedMaxPayload = 8 << 20

// startEmbedded runs a JetStream server inside the process. Without a
// ListenAddr it opens no port at all: the only client is the in-process
// connection, so a single `waypoint start` needs no NATS installation and
// exposes nothing.
func startEmbedded(o Options) (*server.Server, error) {
	if err := os.MkdirAll(o.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("bus: embedded server store directory: %w", err)
	}
	so := &server.Options{
		ServerName: "waypoint-embedded",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		MaxPayload: embeddedMaxPayload,
		DontListen: o.ListenAddr == "",
	}
	if o.ListenAddr != "" {
		host, port, err := net.SplitHostPort(o.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("bus: embedded server listen address %q: %w", o.ListenAddr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("bus: embedded server listen address %q: bad port", o.ListenAddr)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	logger := serverLogger{l: o.Logger.With("component", "nats-server"), fatal: make(chan string, 1)}
	srv.SetLoggerV2(logger, false, false, false)
	go srv.Start()
	// The server reports startup failures (a port in use, a bad store)
	// through Fatalf and leaves exiting to its caller.
	deadline := time.Now().Add(30 * time.Second)
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-logger.fatal:
			srv.Shutdown()
			return nil, fmt.Errorf("bus: embedded server: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			return nil, fmt.Errorf("bus: embedded server in %s did not become ready within 30s", o.StoreDir)
		}
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, fmt.Errorf("bus: embedded server in %s started without JetStream (see its log)", o.StoreDir)
	}
	return srv, nil
}

// serverLogger forwards the embedded server's log to slog. Notices (the
// startup banner, routine JetStream housekeeping) are debug-level here:
// they describe the server, not the pipeline.
type serverLogger struct {
	l     *slog.Logger
	fatal chan string
}

func (s serverLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	s.l.Error(msg)
	select {
	case s.fatal <- msg:
	default:
	}
}
func (s serverLogger) Errorf(format string, v ...any) { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Tracef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
