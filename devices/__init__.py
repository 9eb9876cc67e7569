"""Device profiles, the systemd unit and deploy over SSH (to come: issue "Devices and deploy")."""
