const CACHE = "idcode-wallet-__SHELL_VERSION__";
