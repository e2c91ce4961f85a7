// Package wire is the JSON-RPC layer of the MCP stdio transport as mcpcage
// sees it: it splits a byte stream into messages (one per line), peeks at
// the envelope of each message without decoding the rest, and builds the
// few messages the daemon writes itself (error responses).
//
// Framing rules (MCP stdio transport, both protocol eras):
//
//   - A message is the bytes up to and including the next '\n'. A '\r'
//     before it is part of the message's bytes and is relayed as received;
//     it is only ignored when the JSON is inspected.
//   - Lines holding only whitespace carry no message and are skipped.
//   - The last message of a stream may end at EOF without '\n'.
//   - A message longer than the configured cap is never buffered whole:
//     [Reader.Next] stops reading at the cap and returns [ErrTooLarge].
//
// Envelope rules: [Peek] reads the top-level members jsonrpc, id, method,
// result, error and params of an object (or of each element of a batch)
// and validates the rest of the text as JSON without building values.
// Request ids stay raw JSON text, so 9007199254740993 never passes through
// a float64.
package wire
