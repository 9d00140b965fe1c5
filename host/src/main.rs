fn main() -> std::process::ExitCode {
    scour::cli::main()
}
