//! How every hashgrid binary reads its command line (with the `cli` feature): clap's parse,
//! with a usage error as one line on stderr and exit code 2; `--help` and `--version` print
//! in full and exit 0.

/// The command line as `P`; `--help` and `--version` print and exit 0. A usage error is one
/// line on stderr ("PROGRAM: error: WHAT (try --help)"), and the exit code 2 to return.
pub fn parse_command_line<P: clap::Parser>() -> Result<P, std::process::ExitCode> {
    use clap::error::ErrorKind;
    match P::try_parse() {
        Ok(parsed) => Ok(parsed),
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => err.exit(),
        Err(err) => {
            eprintln!("{}", usage_line(P::command().get_name(), &err));
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// A clap error as one line: its first paragraph (the lines before the first blank one, such
/// as "the following required arguments were not provided:" and the arguments) joined, without
/// clap's "error: "; a missing subcommand, which clap answers with the whole help, as just that.
fn usage_line(program: &str, err: &clap::Error) -> String {
    let what = match err.kind() {
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "a subcommand is required".to_string(),
        _ => {
            let rendered = err.render().to_string();
            let paragraph: Vec<&str> = rendered.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            paragraph.join(" ").trim_start_matches("error: ").to_string()
        }
    };
    format!("{program}: error: {what} (try --help)")
}
