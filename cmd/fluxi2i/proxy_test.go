package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startProxy runs `fluxi2i proxy` (the built-in simulator behind it) on a
// loopback port until the test ends; it returns the address and the
// command's stderr.
func startProxy(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, append([]string{"proxy", "--addr", "127.0.0.1:0"}, args...), nil, &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		assert.Equal(t, 0, <-done, errb.String())
	})
	re := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/api/fal/proxy`)
	for range 200 {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			return m[1], &errb
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the proxy did not start: %s", errb.String())
	return "", nil
}

// submitOn is a raw HTTP/1.1 submit through the proxy, naming host.
func submitOn(host string) string {
	const body = `{"image_url":"https://example.com/input.jpg","prompt":"p"}`
	return fmt.Sprintf("POST /api/fal/proxy HTTP/1.1\r\nHost: %s\r\nX-Fal-Target-Url: https://queue.fal.run/fal-ai/flux-1/dev/image-to-image\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", host, len(body), body)
}

// rawSubmit sends a submit on conn with the given Host and returns the
// answer's status line ("" if none came within wait).
func rawSubmit(t *testing.T, conn net.Conn, host string, wait time.Duration) string {
	t.Helper()
	_, err := conn.Write([]byte(submitOn(host)))
	require.NoError(t, err)
	conn.SetReadDeadline(time.Now().Add(wait))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line)
}

// On loopback, `fluxi2i proxy` answers only requests naming a loopback
// Host: a page whose name is rebound to 127.0.0.1 is refused, and the
// refusal is logged with its reason.
func TestProxyCommandRefusesARebindingHost(t *testing.T) {
	addr, errb := startProxy(t)
	assert.Contains(t, errb.String(), "must name localhost or a loopback address as Host")
	for host, want := range map[string]string{"evil.example:8787": "403", addr: "200", "localhost:8787": "200"} {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		assert.Contains(t, rawSubmit(t, conn, host, 5*time.Second), " "+want+" ", host)
		conn.Close()
	}
	assert.Contains(t, errb.String(), "reason=host")
	assert.Contains(t, errb.String(), "evil.example:8787")
}

// `fluxi2i proxy` serves a bounded number of connections at once: past
// it, a connection waits until another closes.
func TestProxyCommandBoundsConnections(t *testing.T) {
	saved := proxyConns
	proxyConns = 2
	t.Cleanup(func() { proxyConns = saved })
	addr, _ := startProxy(t)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)  // both accepted
	third, err := net.Dial("tcp", addr) // the kernel's backlog takes it
	require.NoError(t, err)
	defer third.Close()
	_, err = third.Write([]byte(submitOn(addr)))
	require.NoError(t, err)
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n, _ := third.Read(make([]byte, 1))
	assert.Zero(t, n, "not served while two connections are open")
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(third)
	require.NoError(t, err)
	assert.Contains(t, string(answer), "HTTP/1.1 200 ", "served once one closed")
	held[1].Close()
}

// The limiting listener itself: a connection's slot comes back once,
// however often it is closed, and Close unblocks a waiting Accept.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := limitListener(inner, 1)
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	c, err := ln.Accept()
	require.NoError(t, err)
	c.Close()
	c.Close() // twice: one slot back
	c, err = ln.Accept()
	require.NoError(t, err)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept() // the one slot is taken: waits
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("a second connection was accepted at once (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	ln.Close()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
}
