package sink

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// fieldEnc encodes staging rows in the server's binary forms straight from
// their typed fields, so a row costs no interface boxing, reflection or
// allocation, which pgx's generic encoding spends on every value. It writes
// either the body of a COPY ... FROM STDIN (FORMAT binary), row after row,
// or one binary array per column, to be sent as query parameters and read
// back with unnest. Both use the same field encoding (an int32 length, -1
// for NULL, then the value), so each row type has a single encode method.
// Buffers are kept across batches.
type fieldEnc struct {
	// columns selects the array form.
	columns bool
	buf     []byte
	cols    [][]byte
	col     int
	rows    int
	r       bytes.Reader
}

// arrayHeader is the size of a one-dimensional array's header: ndim,
// has-nulls flag, element type, length and lower bound.
const arrayHeader = 20

// copyHeader is the binary COPY signature followed by zero flags and a zero
// header-extension length.
const copyHeader = "PGCOPY\n\xff\r\n\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00"

// y2kMicros is the Unix time of 2000-01-01 UTC, the timestamptz epoch, in
// microseconds.
const y2kMicros = 946_684_800 * 1_000_000

// begin starts a COPY body, or n column arrays.
func (e *fieldEnc) begin(columns bool, n int) {
	e.columns, e.rows = columns, 0
	if !columns {
		e.buf = append(e.buf[:0], copyHeader...)
		return
	}
	for len(e.cols) < n {
		e.cols = append(e.cols, nil)
	}
	for i := range n {
		e.cols[i] = append(e.cols[i][:0], make([]byte, arrayHeader)...)
	}
}

// row starts a tuple of n fields.
func (e *fieldEnc) row(n int) {
	e.rows++
	if e.columns {
		e.col = 0
		return
	}
	e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(n))
}

// out returns the buffer the next field goes to.
func (e *fieldEnc) out() *[]byte {
	if !e.columns {
		return &e.buf
	}
	e.col++
	return &e.cols[e.col-1]
}

// arrays completes the column arrays, whose element types are oids, and
// returns them; they stay valid until the next begin.
func (e *fieldEnc) arrays(oids []uint32) [][]byte {
	for i, oid := range oids {
		h := e.cols[i][:0]
		h = binary.BigEndian.AppendUint32(h, 1) // ndim
		h = binary.BigEndian.AppendUint32(h, 1) // may have nulls
		h = binary.BigEndian.AppendUint32(h, oid)
		h = binary.BigEndian.AppendUint32(h, uint32(e.rows))
		binary.BigEndian.AppendUint32(h, 1) // lower bound
	}
	return e.cols[:len(oids)]
}

func (e *fieldEnc) null() {
	p := e.out()
	*p = append(*p, 0xff, 0xff, 0xff, 0xff)
}

// bytea appends v, or NULL for a nil slice.
func (e *fieldEnc) bytea(v []byte) {
	if v == nil {
		e.null()
		return
	}
	p := e.out()
	*p = append(binary.BigEndian.AppendUint32(*p, uint32(len(v))), v...)
}

// jsonb appends JSON text in jsonb's binary form: a version byte, then
// the text.
func (e *fieldEnc) jsonb(v []byte) {
	p := e.out()
	*p = append(append(binary.BigEndian.AppendUint32(*p, uint32(len(v)+1)), 1), v...)
}

func (e *fieldEnc) text(s string) {
	p := e.out()
	*p = append(binary.BigEndian.AppendUint32(*p, uint32(len(s))), s...)
}

func (e *fieldEnc) optText(t pgtype.Text) {
	if !t.Valid {
		e.null()
		return
	}
	e.text(t.String)
}

func (e *fieldEnc) int8(v int64) {
	p := e.out()
	*p = binary.BigEndian.AppendUint64(append(*p, 0, 0, 0, 8), uint64(v))
}

func (e *fieldEnc) optInt8(v pgtype.Int8) {
	if !v.Valid {
		e.null()
		return
	}
	e.int8(v.Int64)
}

func (e *fieldEnc) int4(v int32) {
	p := e.out()
	*p = binary.BigEndian.AppendUint32(append(*p, 0, 0, 0, 4), uint32(v))
}

func (e *fieldEnc) int2(v int16) {
	p := e.out()
	*p = binary.BigEndian.AppendUint16(append(*p, 0, 0, 0, 2), uint16(v))
}

func (e *fieldEnc) bool(v bool) {
	b := byte(0)
	if v {
		b = 1
	}
	p := e.out()
	*p = append(*p, 0, 0, 0, 1, b)
}

// timestamptz appends t as microseconds since 2000-01-01 UTC.
func (e *fieldEnc) timestamptz(t time.Time) {
	e.int8(t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - y2kMicros)
}

func (e *fieldEnc) optTimestamptz(t pgtype.Timestamptz) {
	if !t.Valid {
		e.null()
		return
	}
	e.timestamptz(t.Time)
}

// vector appends v in pgvector's binary form: int16 dimensions, int16
// unused, big-endian float32s. The caller keeps len(v) within int16.
func (e *fieldEnc) vector(v []float32) {
	p := e.out()
	b := binary.BigEndian.AppendUint32(*p, uint32(4+4*len(v)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, 0, 0)
	for _, f := range v {
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(f))
	}
	*p = b
}

// send ends the data and runs sql, a COPY ... FROM STDIN statement, with it.
func (e *fieldEnc) send(ctx context.Context, conn *pgconn.PgConn, sql string) (int64, error) {
	e.buf = append(e.buf, 0xff, 0xff)
	e.r.Reset(e.buf)
	ct, err := conn.CopyFrom(ctx, &e.r, sql)
	return ct.RowsAffected(), err
}

// copyTarget is a table and the COPY statement that fills it.
type copyTarget struct {
	table string
	sql   string
}

func newCopyTarget(table string, cols []string) copyTarget {
	return copyTarget{table, fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT binary)", table, strings.Join(cols, ", "))}
}

// encoder is a staging row that appends itself to a COPY body.
type encoder[T any] interface {
	*T
	encode(*fieldEnc)
}

// copyRows COPYs rs into t in one statement.
func copyRows[T any, P encoder[T]](ctx context.Context, conn *pgconn.PgConn, e *fieldEnc, t copyTarget, rs []T) error {
	if len(rs) == 0 {
		return nil
	}
	e.begin(false, 0)
	for i := range rs {
		P(&rs[i]).encode(e)
	}
	if _, err := e.send(ctx, conn, t.sql); err != nil {
		return fmt.Errorf("sink: copy into %s: %w", t.table, err)
	}
	return nil
}
