"""Where records come from: sources (stdin, files, follow:, Argus on an interface or a capture), the records' parser, the pcap reader and clock, intake and recording."""
