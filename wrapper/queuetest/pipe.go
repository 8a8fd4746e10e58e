package queuetest

import (
	"context"
	"net"
	"sync"
)

// pipeListener is an in-memory net.Listener: every dial makes a net.Pipe.
// Goroutines blocked on it are durably blocked in a testing/synctest
// bubble, so fake time advances while client and server wait on each other.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  pipeAddr
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

func newPipeListener(addr string) *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: pipeAddr(addr)}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		client.Close()
		server.Close()
		return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: l.addr, Err: net.ErrClosed}
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: l.addr, Err: ctx.Err()}
	}
}
