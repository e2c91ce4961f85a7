// Package relay is mcpcage's JSON-RPC interceptor: it sits between an MCP
// client and an MCP server, relays every message in both directions
// byte for byte, and gives policy a place to look at (and refuse) each one.
//
// Guarantees:
//   - Messages are relayed unchanged and in order within a direction. Only
//     the envelope is decoded (see package wire); one goroutine per
//     direction, none per message.
//   - A line from the client that is not JSON gets a -32700 parse error and
//     is not forwarded; valid JSON that is not JSON-RPC gets -32600. A bad
//     line from the server is dropped and logged. Nothing is lost silently.
//   - Requests are correlated with responses by raw id in both directions.
//     A response from the server to an id the client never sent is dropped:
//     a server cannot forge answers. An error with id null (the server
//     could not read a line) answers no request: it is passed on, and
//     logged, since no client takes it for the answer it waits for. When the server goes away, every request
//     still pending is answered with an error, so the client never hangs.
//   - A request its sender cancels (notifications/cancelled) leaves the
//     pending table once the notification is forwarded: a late answer is
//     dropped, and the client gets no error for it when the server dies.
//     Both directions. A server cannot cancel the daemon's own requests.
//     A cancellation whose requestId is ambiguous (twice, in another
//     letter case, or spelled with escapes) is dropped.
//     The table stays bounded (10,000 requests per direction).
//   - A message above the size cap ends the session without being buffered
//     whole; the client is told why.
//   - A numeric id a server changed by a float64 round trip (1e2 for 100)
//     is given back as the client sent it, alone, inside a batch, or in a
//     rewritten response. Ids beyond ±(2^53-1), which such a server would
//     take for other ids, are refused.
//   - Each element of a batch is inspected on its own. A batch whose
//     elements all pass is forwarded as received; otherwise the passing
//     elements are forwarded as a new batch and refusals are answered one
//     by one.
//   - A request held by the inspector (Verdict.Hold: its audit record is
//     not yet durable) keeps everything behind it from the server; the
//     relay goes on reading and deciding meanwhile; queued requests whose
//     holds have yielded by the time the first one's does go to the
//     server with one write. Requests read together
//     (the client wrote them together) are decided one after the other
//     with their holds deferred (see [Deferrer]); one Flush then makes all
//     of them durable, and those whose hold yields nil reach the server in
//     order with one write. A reply the relay writes to the client (a
//     denial) first sends the requests decided before it, so they never
//     wait on a client that does not read.
//   - String ids starting with [OwnIDPrefix] are reserved for requests of
//     the daemon's own: a server's request using one is refused, a
//     client's response carrying one is consumed and never reaches the
//     server.
package relay
