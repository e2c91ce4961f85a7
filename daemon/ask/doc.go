// Package ask puts a request no consent covers to the user: the question
// mcpcage asks in the client (an elicitation/create of its own, or the
// input request of an input_required result in the 2026-07-28 era), the
// answer read back, the sealed requestState that carries a question across
// the client's retry, the per-session rate of questions, and the book of
// requests nobody answered (mcpcage pending, approve, deny).
package ask
