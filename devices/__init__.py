"""Devices: profiles, the systemd unit, and deploying a release to a device over SSH.

    profiles   DeviceProfile, load_profile(name), profile_names()
    unit       render_unit(profile, ...): the edge-ids.service for a device
    package    the release package: bundle, wheelhouse for the device, unit, probe, install.py
    install    runs on the device (standard library only): install, health check, rollback, status
    ssh        Remote: the system's OpenSSH client, host-key checking always on
    deploy     deploy / status / rollback, host side
"""
