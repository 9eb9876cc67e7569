"""Device profiles (profiles/*.toml) and the systemd unit rendered from them.

    profiles   DeviceProfile, load_profile(name), profile_names()
    unit       render_unit(profile, ...): the edge-ids.service for a device
"""
