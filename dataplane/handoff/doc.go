// Package handoff passes a running data plane's listening sockets to its
// successor, for a binary upgrade without downtime: the listening sockets
// are never closed, so no connection attempt is refused while the new
// binary starts and the old one drains. Like Pingora's graceful upgrade, the
// old process sends duplicates of the listeners' file descriptors over a
// Unix socket (SCM_RIGHTS); both processes then accept on the same kernel
// sockets until the old one stops.
//
// The old process runs Serve (or Listen and (*Server).Serve) on a socket
// path beside its other listeners. The new process calls Take on that path,
// starts serving on the listeners it receives, checks that they are the
// ones its flags ask for, and calls Ready; the old process then frees the
// path and calls OnHandover, which begins its graceful drain and exit. The
// new process may then Serve on the same path for the next upgrade.
//
//	old process (Serve)                       successor (Take, Ready)
//	───────────────────                       ───────────────────────
//	listen on path (mode 0600); remove a
//	stale socket file, refuse a live one
//	accept ◀────────────── connect ────────── Take(ctx, path)
//	check peer uid (SO_PEERCRED) ───────────▶ check peer uid
//	        ◀──────────── hello v1 ──────────
//	check version; dup each listener
//	(File), send names + fds ── offer ─────▶ rebuild listeners (FileListener);
//	close the duplicates                      both processes accept now
//	                                          ... serve, check names/addresses
//	        ◀──────────── ready ─────────────  Ready(ctx)
//	close the Unix listener, remove path
//	        ───────────── released ────────▶  Ready returns nil
//	OnHandover(): drain, exit                 Serve(ctx, path, ...) for the next
//
// A successor that disconnects, fails, or does not say ready within
// Config.ReadyTimeout (default 30s) changes nothing: the old process keeps
// serving and offers the same listeners to the next successor. "ready" is
// the point of no return: once the old process has read it, it hands over
// even if its "released" cannot be delivered.
//
// Wire format: each message is one SOCK_SEQPACKET packet, "LBHO", the
// protocol version byte (Version), a type byte, then the payload. The offer
// payload is a count byte and each name as a length byte and its bytes,
// sorted, with one descriptor per name, in the same order, in a single
// SCM_RIGHTS control message. An error message carries a reason as text;
// its type and layout never change, so a process that gets another
// version's message answers with an error naming both versions and each
// side reports it clearly.
//
// Only processes running as the same effective user as this one (or as
// root) are served: whoever connects receives the listening sockets. Put
// the path in a directory only that user can write to.
package handoff
