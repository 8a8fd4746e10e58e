// Package netguard tells public internet addresses from the rest, for
// code that opens connections to addresses someone else named: the
// simulator fetching an image_url, the client downloading output images.
// It also recognises loopback Host headers, for servers bound to
// loopback that must not answer a rebound DNS name.
package netguard

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// notPublic are the ranges of the IANA IPv4 and IPv6 special-purpose
// address registries that are not the public internet (RFC 6890 and its
// updates), beside the ones netip classifies itself.
var notPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),      // private
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (carrier NAT)
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local
	netip.MustParsePrefix("172.16.0.0/12"),   // private
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation (TEST-NET-1)
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast (deprecated)
	netip.MustParsePrefix("192.168.0.0/16"),  // private
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation (TEST-NET-2)
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation (TEST-NET-3)
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255 (broadcast)
	netip.MustParsePrefix("::/128"),          // unspecified
	netip.MustParsePrefix("::1/128"),         // loopback
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments, Teredo 2001::/32 included
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("3fff::/20"),       // documentation (RFC 9637)
	netip.MustParsePrefix("5f00::/16"),       // segment routing SIDs (RFC 9602)
	netip.MustParsePrefix("fc00::/7"),        // unique local
	netip.MustParsePrefix("fe80::/10"),       // link-local
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	netip.MustParsePrefix("ff00::/8"),        // multicast
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64: a private translator
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT), not routed
}

// Embedding forms: an IPv6 address that carries an IPv4 one is judged by
// the IPv4 it carries.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64 prefix: the low 32 bits
	sixToFour = netip.MustParsePrefix("2002::/16")    // 6to4: bits 16-47
	compat    = netip.MustParsePrefix("::/96")        // IPv4-compatible ::a.b.c.d (deprecated)
)

// PublicAddr reports whether a is an address of the public internet: not
// in any non-public range of the IANA special-purpose registries (this
// network, private, shared, loopback, link-local, documentation,
// benchmarking, multicast, reserved, broadcast, unique local, site-local,
// discard, IETF assignments, Teredo). IPv4-mapped (::ffff:a.b.c.d),
// IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses are
// and 6to4 (2002:aabb:ccdd::/48) addresses are judged by the IPv4 they
// carry; the local-use NAT64 prefix 64:ff9b:1::/48 is refused.
func PublicAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.WithZone("")
	if a.Is4In6() {
		return PublicAddr(a.Unmap())
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return PublicAddr(netip.AddrFrom4([4]byte(b[12:16])))
		case compat.Contains(a):
			// ::/128 and ::1 are caught here as 0.0.0.0 and 0.0.0.1.
			return PublicAddr(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return PublicAddr(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	if !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range notPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// LocalAddr reports a loopback or private address (RFC 1918, unique
// local), or one of those in an IPv4-mapped form: where a local test
// server (the simulator, queuetest) listens.
func LocalAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	return a.IsValid() && (a.IsLoopback() || a.IsPrivate())
}

// ErrNotPublic is the error of a connection the guard refused.
var ErrNotPublic = errors.New("not a public address")

// Control is a net.Dialer Control that refuses every address that is not
// PublicAddr: it runs after DNS resolution, before the connection is
// made, on every connection (redirects included), so DNS cannot cheat.
func Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !PublicAddr(ap.Addr()) {
		return ErrNotPublic
	}
	return nil
}

// LoopbackHost reports whether host (a Host header: a name or an address,
// with or without a port) names loopback: localhost (or a name below
// .localhost), 127.0.0.0/8 or ::1. A server bound to loopback answers only
// such names: a web page whose DNS name was rebound to 127.0.0.1 still
// sends its own name.
func LoopbackHost(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}
