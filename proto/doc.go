// Package proto holds the Go code generated from the Snapchain wire
// definitions in this directory. It is generated only: run `make proto`.
//
// The definitions have no proto package, as upstream's, so their names
// (Message, HubEvent, ...) are registered globally; nothing else in the
// binary may register the same names.
package proto
