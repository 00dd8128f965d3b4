//! hashgrid-coordinator: the scheduling core and its service shell.
