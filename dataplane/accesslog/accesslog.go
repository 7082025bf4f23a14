// Package accesslog writes the data plane's access log: one structured line
// per request, in JSON or logfmt, to stdout or a file.
//
// The request path never waits for the log: Log hands the entry to a
// bounded queue and returns; one goroutine formats and writes entries. When
// the writer falls behind and the queue is full, entries are dropped and
// counted (Dropped), so a slow disk costs log lines, never latency.
package accesslog

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Entry is one request's log record.
type Entry struct {
	// Time is when the request arrived.
	Time time.Time
	// Client is the client's address (IP:port).
	Client string
	// Host is the Host header (or HTTP/2 :authority) the client sent.
	Host string
	// Method and Path of the request; the query string is not logged.
	Method, Path string
	// Proto is the client's protocol, e.g. "HTTP/1.1" or "HTTP/2.0".
	Proto string
	// Status is the status the client got (101 for a WebSocket tunnel).
	Status int
	// BytesIn and BytesOut count body bytes received from the client and
	// sent to it (tunnel bytes for WebSocket).
	BytesIn, BytesOut int64
	// Duration is how long the proxy spent on the request.
	Duration time.Duration
	// Pool and Backend are where the request went; empty when nowhere.
	Pool, Backend string
	// Retries counts the attempts after the first.
	Retries int
	// UpstreamStatus is the backend's status; 0 when it gave none.
	UpstreamStatus int
}

// Format is an output format.
type Format int

// Formats.
const (
	JSON Format = iota
	Logfmt
)

// ParseFormat parses "json" or "logfmt".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "json":
		return JSON, nil
	case "logfmt":
		return Logfmt, nil
	}
	return 0, fmt.Errorf("invalid access log format %q: want json or logfmt", s)
}

// QueueSize is the default number of entries waiting to be written.
const QueueSize = 8192

// Logger is an asynchronous access log. Create it with New; Run writes.
type Logger struct {
	w       io.Writer
	format  Format
	queue   chan Entry
	dropped atomic.Uint64
	written atomic.Uint64
}

// New returns a logger writing to w in format, queueing up to queue
// entries (QueueSize when queue <= 0).
func New(w io.Writer, format Format, queue int) *Logger {
	if queue <= 0 {
		queue = QueueSize
	}
	return &Logger{w: w, format: format, queue: make(chan Entry, queue)}
}

// Log queues e without blocking; a full queue drops it.
func (l *Logger) Log(e Entry) {
	select {
	case l.queue <- e:
	default:
		l.dropped.Add(1)
	}
}

// Dropped returns how many entries were dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Written returns how many entries were written.
func (l *Logger) Written() uint64 { return l.written.Load() }

// Run writes queued entries until ctx is done, then writes what is still
// queued and returns. It flushes whenever the queue runs empty.
func (l *Logger) Run(ctx context.Context) error {
	bw := bufio.NewWriterSize(l.w, 64<<10)
	var buf []byte
	var werr error
	write := func(e *Entry) {
		buf = l.appendEntry(buf[:0], e)
		if _, err := bw.Write(buf); err != nil && werr == nil {
			werr = fmt.Errorf("write access log: %w", err)
		}
		l.written.Add(1)
	}
	flush := func() {
		if err := bw.Flush(); err != nil && werr == nil {
			werr = fmt.Errorf("write access log: %w", err)
		}
	}
	for {
		select {
		case e := <-l.queue:
			write(&e)
			if len(l.queue) == 0 {
				flush()
			}
		case <-ctx.Done():
			for {
				select {
				case e := <-l.queue:
					write(&e)
				default:
					flush()
					return werr
				}
			}
		}
	}
}

func (l *Logger) appendEntry(b []byte, e *Entry) []byte {
	if l.format == Logfmt {
		return appendLogfmt(b, e)
	}
	return appendJSON(b, e)
}

const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

func appendJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, `","client":`...)
	b = appendJSONString(b, e.Client)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.Host)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.Method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.Path)
	b = append(b, `,"protocol":`...)
	b = appendJSONString(b, e.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, `,"duration_seconds":`...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 6, 64)
	b = append(b, `,"pool":`...)
	b = appendJSONString(b, e.Pool)
	b = append(b, `,"backend":`...)
	b = appendJSONString(b, e.Backend)
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(e.Retries), 10)
	b = append(b, `,"upstream_status":`...)
	b = strconv.AppendInt(b, int64(e.UpstreamStatus), 10)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

func appendLogfmt(b []byte, e *Entry) []byte {
	b = append(b, "time="...)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = appendKV(b, "client", e.Client)
	b = appendKV(b, "host", e.Host)
	b = appendKV(b, "method", e.Method)
	b = appendKV(b, "path", e.Path)
	b = appendKV(b, "protocol", e.Proto)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, " bytes_in="...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, " bytes_out="...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, " duration_seconds="...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 6, 64)
	b = appendKV(b, "pool", e.Pool)
	b = appendKV(b, "backend", e.Backend)
	b = append(b, " retries="...)
	b = strconv.AppendInt(b, int64(e.Retries), 10)
	b = append(b, " upstream_status="...)
	b = strconv.AppendInt(b, int64(e.UpstreamStatus), 10)
	return append(b, '\n')
}

// appendKV appends " key=value", quoting the value when it is empty or
// holds a space, '=', '"' or a control character.
func appendKV(b []byte, key, v string) []byte {
	b = append(b, ' ')
	b = append(b, key...)
	b = append(b, '=')
	quote := v == ""
	for i := 0; i < len(v) && !quote; i++ {
		c := v[i]
		quote = c <= ' ' || c == '=' || c == '"' || c == 0x7f || c >= utf8.RuneSelf
	}
	if !quote {
		return append(b, v...)
	}
	return appendJSONString(b, v) // a JSON string is a valid logfmt quoted value
}
